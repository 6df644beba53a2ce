"""The catalogue of audit event types, grouped. record_event refuses a type not listed here,
so a typo cannot create an event nobody will ever search for."""

EVENT_TYPES: dict[str, str] = {
    # auth
    "auth.token.create": "API token issued",
    "auth.token.revoke": "API token revoked",
    "auth.token.denied": "API token refused (unknown, expired, revoked or malformed)",
    "auth.login.success": "Interactive login",
    "auth.login.failure": "Interactive login refused (wrong credentials)",
    "auth.lockout": "Account locked after repeated login failures",
    "auth.login.failure_rate": "ALERT: failed-login rate rule: too many refused logins for one user name or from one "
    "address within the window",
    "auth.lockout.clear": "Login lockout lifted by a security officer (failure records deleted)",
    "auth.logout": "Logout",
    "auth.session.expired": "Session ended by the idle or absolute timeout",
    "auth.2fa.enrol": "Second factor (TOTP) enrolled",
    "auth.2fa.failure": "Second factor code refused",
    "auth.2fa.success": "Second factor verified",
    "auth.2fa.remove": "ALERT: a person's second factor (TOTP device) removed by a security officer",
    "auth.role.assign": "Role given to a user",
    "auth.role.remove": "Role taken from a user",
    "auth.breakglass.grant": "Emergency (break-glass) role granted",
    "auth.breakglass.use": "Emergency (break-glass) role used",
    "auth.breakglass.revoke": "Emergency (break-glass) role revoked",
    "auth.account.disabled": "Account disabled (dormant)",
    "auth.account.create": "User account created",
    "auth.account.update": "User account changed",
    "auth.service_account.create": "Service account created",
    "auth.password.change": "A person changed their own password (portal or admin page)",
    "auth.password.reset": "ALERT: another person's password reset (change forced, sessions ended, tokens revoked)",
    "auth.2fa.void": "TOTP devices voided (a privileged role given, or a new enrolment code from the host)",
    "auth.enrolment.issue": "One-time TOTP enrolment code issued for a privileged account",
    "auth.enrolment.use": "One-time TOTP enrolment code spent by an enrolment",
    "auth.officer.bootstrap": "ALERT: security officer created on the host (manage.py bootstrap_officer)",
    "auth.superuser.use": "ALERT: the sealed superuser (break-glass) account logged in or made a request",
    # access
    "access.grant.create": "Model access granted",
    "access.grant.revoke": "Model access revoked",
    "access.grant.expire": "Expired model access grant removed",
    "access.refused": "Changing call refused (unauthenticated, forbidden, malformed, not found or conflicting)",
    # registry
    "registry.model.create": "Model created",
    "registry.version.create": "Model version uploaded and encrypted",
    "registry.version.rejected": "Model version upload refused",
    "registry.import.create": "GGUF import requested (upload staged encrypted, conversion queued)",
    "registry.import.finish": "GGUF import finished (version registered, or failed with a code)",
    "registry.integrity.verify": "Stored artifacts decrypted and their digests checked (a failure names the artifacts)",
    # keys
    "keys.dek.create": "Data key generated and stored, wrapped by the active KEK version",
    "keys.dek.destroy": "Data key destroyed (crypto-shredding, e.g. of a model version)",
    "keys.dek.rewrap": "Data keys re-wrapped by the new KEK version (one batch of a rotation)",
    "keys.kek.register": "KEK version registered (first use of the configured KEK)",
    "keys.kek.create": "New KEK version created in the key provider",
    "keys.kek.rotate": "KEK rotation started (or refused)",
    "keys.kek.rotation_resume": "KEK rotation resumed",
    "keys.kek.rotation_complete": "KEK rotation finished: every data key names the new version",
    "keys.kek.rotation_fail": "KEK rotation stopped on an error (resumable)",
    "keys.kek.retire": "Old KEK version destroyed in the key provider",
    # deployment
    "deployment.server.create": "Inference server registered",
    "deployment.server.rejected": "Inference server registration refused (address or TLS policy)",
    "deployment.server.state": "Inference server seen going up or down by the probe",
    "deployment.server.credential": "Inference server's restricted-API credential set, replaced or removed",
    "deployment.request": "Deployment requested",
    "deployment.request.rejected": "Deployment refused (the server lacks the backend the version needs)",
    "deployment.undeploy": "Undeploy requested",
    "deployment.transition": "Deployment changed state",
    "deployment.canary.load": "De-identification canary (an echo model) loaded on a server for the compliance probe",
    # compliance
    "compliance.profile.attach": "Compliance profile attached (installation or model)",
    "compliance.profile.detach": "Compliance profile detached",
    "compliance.policy.update": "Model personal-data / de-identification policy changed",
    "compliance.attestation.upload": "Attestation uploaded for a manual control",
    "compliance.evaluate": "Compliance controls evaluated",
    "compliance.control.regressed": "ALERT: a compliance control regressed from pass to fail",
    "compliance.report.request": "Compliance report requested",
    "compliance.report.generate": "Compliance report generated and signed (or failed)",
    "compliance.report.download": "Compliance report downloaded",
    # inference
    "inference.infer": "Inference call through the gateway",
    "inference.metadata": "Model metadata read through the gateway",
    "inference.ready": "Model readiness read through the gateway",
    "inference.chat": "Chat completion through the OpenAI-compatible API (tokens, time to first token, finish)",
    "inference.chat.started": "Streamed chat completion started (written before the first byte is sent)",
    "inference.completion": "Text completion through the OpenAI-compatible API (tokens, time to first token, finish)",
    "inference.completion.started": "Streamed text completion started (written before the first byte is sent)",
    "inference.models": "Language models listed through the OpenAI-compatible API",
    # llm (chat-model governance, docs/llm.md)
    "llm.policy.update": "Chat model policy set (token limit, sampling, system prompt, retention)",
    "llm.quota.set": "Token quota or per-minute limit set",
    "llm.quota.delete": "Token quota removed",
    "llm.exchange.read": "Retained prompt and answer decrypted and read (or the read refused)",
    "llm.exchange.delete": "Retained prompt and answer deleted on request (tombstone kept)",
    "llm.exchange.purge": "Expired retained exchanges purged and their idle day keys destroyed",
    # audit
    "audit.field_change": "Field-level change of a governed object (django-auditlog)",
    "audit.verify": "Audit chain verified",
    "audit.export": "Audit events exported",
    "audit.search": "Audit events searched or read",
    "audit.purge": "Audit events older than retention archived and purged",
    # alerts (docs/alerts.md)
    "alert.test": "ALERT (test): a test alert sent to the alert channel (manage.py send_test_alert)",
    "alert.delivered": "Alert delivered: the alert channel acknowledged it (2xx)",
    "alert.failed": "Alert not delivered: no channel, a refused address, or every attempt failed",
    # configuration (docs/production.md)
    "config.insecure_override": "ALERT: production runs with insecure settings allowed by SOVEREIGN_INSECURE_OVERRIDE "
    "(or the override changed or was withdrawn)",
    # platform (the `make run` supervisor, deploy/run_local.py)
    "platform.process.restart": "Supervised process (triton, worker, web) exited and was restarted",
    "platform.process.giveup": "Supervised process kept failing: the launcher gave up and stopped",
    # the signed manifest of the installed code (apps/compliance/manifest.py)
    "platform.code_manifest.write": "Signed manifest of the installed code written (manage.py code_manifest --write)",
    "platform.code_manifest.mismatch": "ALERT: the installed code differs from the signed manifest at process start",
}


def group_of(event_type: str) -> str:
    return event_type.split(".", 1)[0]
