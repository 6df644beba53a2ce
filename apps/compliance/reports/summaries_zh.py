# ruff: noqa: E501 - a translation table: one English summary and its Chinese per entry reads best unwrapped
"""The Chinese of the checks' English summaries and remedies (apps/compliance/reports/summaries.py).
`{name}` is a value carried over as written; a name starting with `items` is a "; "-separated list
whose items are translated one by one. Order matters: the first pattern that matches wins."""

PATTERNS: dict[str, str] = {
    # accounts and access
    "{n} disabled account(s) hold no live token or session; the gateway refuses a disabled person within 60 s "
    "at worst": "{n} 个已停用账号均无有效令牌或会话；网关最迟 60 秒内拒绝已停用人员",
    "{n} superuser account(s), all sealed (unused since last set)": "{n} 个超级用户账号，均已封存（自上次设置后未使用）",
    "{n} privileged user(s) without a confirmed TOTP device": "{n} 个特权用户没有已确认的 TOTP 设备",
    "accounts lock after {n} failed logins": "连续 {n} 次登录失败后锁定账号",
    "all {n} live grant(s) were made through the audited service by a named grantor": "全部 {n} 个有效授权均由具名授权人通过受审计的服务授予",
    "no active account has a generic shareable name": "没有使用通用共享名称的启用账号",
    "no dormant account is active": "没有处于启用状态的休眠账号",
    "no installer or demo account uses a default password": "安装或演示账号均未使用默认密码",
    "only the auditor role reads the audit log": "只有审计员角色可以读取审计日志",
    "passwords ≥ {n} characters, changed every {days} days": "密码不少于 {n} 个字符，每 {days} 天更换一次",
    "sessions end after {n} idle minutes": "空闲 {n} 分钟后会话结束",
    "system, security and audit administration are held by different people (no active superuser)": "系统管理、安全管理和审计管理由不同人员担任（没有启用的超级用户）",
    # audit
    "audit events are kept {days} days and the purge floor is {floor} days (both ≥ {min})": "审计事件保留 {days} 天，清除下限为 {floor} 天（均不少于 {min} 天）",
    "no external audit collector is configured (SOVEREIGN_AUDIT_COLLECTOR_URL)": "未配置外部审计收集器（SOVEREIGN_AUDIT_COLLECTOR_URL）",
    "the audit chain verifies (empty)": "审计链验证通过（为空）",
    "the audit chain verifies": "审计链验证通过",
    "the sealer keeps up with the audit log": "封存进程跟得上审计日志",
    "the application role {role} can get around the append-only guard: {items}": "应用数据库角色 {role} 可以绕过仅追加保护：{items}",
    "the application role {role} is a superuser: it can disable triggers and delete audit rows": "应用数据库角色 {role} 是超级用户：可以禁用触发器并删除审计记录",
    "the application role {role} has BYPASSRLS": "应用数据库角色 {role} 具有 BYPASSRLS 权限",
    "the application role {role} owns {table} (owner {owner}): it can ALTER it, disable or drop the trigger": "应用数据库角色 {role} 拥有表 {table}（所有者 {owner}）：可以修改该表、禁用或删除触发器",
    "the application role {role} holds UPDATE on the whole of {table}": "应用数据库角色 {role} 对整个 {table} 具有 UPDATE 权限",
    "the application role {role} holds {privileges} on {table}": "应用数据库角色 {role} 对 {table} 具有 {privileges} 权限",
    "the application role {role} owns (or is a member of the owner {owner} of) function {function}: it can "
    "replace it": "应用数据库角色 {role} 拥有函数 {function}（或是其所有者 {owner} 的成员）：可以替换该函数",
    # backup and host
    "WAL archiving is off (archive_mode=off)": "WAL 归档未开启（archive_mode=off）",
    "no restore drill has been recorded": "尚无恢复演练记录",
    "{n} internal service(s) listening here, all on loopback; public: {items}": "本机有 {n} 个内部服务在监听，均只监听回环地址；对外服务：{items}",
    "{n} installed distribution(s), all required by {m} pinned requirement(s) or allow-listed, versions as pinned; "
    "DEBUG off": "已安装 {n} 个软件包，均为 {m} 个锁定版本的依赖所需或在允许清单中，版本与锁定一致；DEBUG 已关闭",
    "{n} installed distribution(s) no requirement needs: {names}": "{n} 个已安装的软件包不被任何依赖需要：{names}",
    "{n} pinned version(s) differ from the installed ones": "{n} 个锁定版本与已安装的版本不同",
    "{n} pinned requirement(s) not installed: {names}": "{n} 个锁定的依赖未安装：{names}",
    "{n} unpinned requirement(s)": "{n} 个依赖未锁定版本",
    "no signed code manifest: the installed code cannot be verified": "没有已签名的代码清单：无法验证已安装的代码",
    "`check --deploy` reports {n} security warning(s); DEBUG is on": "`check --deploy` 报告了 {n} 条安全警告；DEBUG 已开启",
    "`check --deploy` reports {n} security warning(s)": "`check --deploy` 报告了 {n} 条安全警告",
    "not TLS-only: {settings}": "未强制仅用 TLS：{settings}",
    # keys and artifacts
    "the KEK is held by the '{provider}' provider (a local file), not an HSM": "密钥加密密钥（KEK）由“{provider}”提供方保存（本地文件），而非硬件安全模块（HSM）",
    "no artifact is stored": "未存储任何制品",
    "no artifact is stored (the upload validator refuses a pickle)": "未存储任何制品（上传校验拒绝 pickle 文件）",
    "the artifact store holds only ciphertext of registered artifacts": "制品存储中只有已登记制品的密文",
    "{n} file(s) in the artifact store belong to no artifact (possible plaintext residue)": "制品存储中有 {n} 个文件不属于任何制品（可能是明文残留）",
    "Inspect and securely wipe the listed files; find the process that wrote them.": "检查并安全擦除所列文件；查明写入这些文件的进程。",
    # models, servers, attestations
    "no inference server is registered": "尚未登记任何推理服务器",
    "no model is marked as receiving PHI or personal information": "没有模型被标记为接收受保护健康信息或个人信息",
    "no model receives PHI or personal information": "没有模型接收受保护健康信息或个人信息",
    "needs a person: no attestation uploaded": "需人工确认：尚未上传证明材料",
    "the check could not run: {error}": "检查无法运行：{error}",
    # the auditor's review of the log (checks/monitoring.py, HIPAA 164.308(a)(1)(ii)(D))
    "no auditor read the audit log in the last {days} days": "最近 {days} 天内没有审计员查阅审计日志",
    "{n} audit-log read(s) by {m} auditor(s) in {days} days; last by {who} at {when}": "{days} 天内 {m} 名审计员查阅审计日志 {n} 次；最近一次由 {who} 于 {when} 查阅",
    "Have a person in the auditor role review the log (search, export or verify it in the admin or through "
    "/api/v1/audit/) at least every {days} days; the reads are recorded and this check finds them.": "请由审计员角色的人员至少每 {days} 天查阅一次日志（在管理后台或通过 /api/v1/audit/ 搜索、导出或验证）；查阅会被记录，本检查据此判断。",
    # alerts, break-glass, login monitoring, anonymous access, destruction (HIPAA checks met by an evaluation)
    "{a} destroyed data key(s) hold no key material, {b} shredded version(s) left no ciphertext, {c} retired KEK(s) "
    "refused by the provider, no plaintext residue": "{a} 个已销毁的数据密钥不含密钥材料，{b} 个已粉碎的版本未留下密文，{c} 个已停用的 KEK 被提供方拒绝使用，无明文残留",
    "all {n} anonymous API requests were refused (401/403)": "全部 {n} 个匿名 API 请求均被拒绝（401/403）",
    "its alerts cannot be shown to arrive: {rest}": "无法证明其告警能够送达：{rest}",
    "no alert channel is configured: a break-glass activation alerts nobody": "未配置告警通道：紧急授权启用时不会通知任何人",
    "no alert channel is configured: alerts reach nobody": "未配置告警通道：告警无法送达任何人",
    "no token call recorded in the last {days} days": "最近 {days} 天内没有记录到令牌调用",
    "Configure SOVEREIGN_ALERT_WEBHOOK_URL and prove it (`manage.py send_test_alert`); review each listed activation "
    "with the security team, since nobody was told of it when it happened.": "配置 SOVEREIGN_ALERT_WEBHOOK_URL 并加以验证（`manage.py send_test_alert`）；与安全团队逐一复核列出的启用记录，因为发生时没有人收到通知。",
    "Configure SOVEREIGN_ALERT_WEBHOOK_URL and prove it (`manage.py send_test_alert`); review each listed activation "
    "with the security team, since nobody was told of it when it happened. {rest}": "配置 SOVEREIGN_ALERT_WEBHOOK_URL 并加以验证（`manage.py send_test_alert`）；与安全团队逐一复核列出的启用记录，因为发生时没有人收到通知。{rest}",
    "Keep django-axes on (SOVEREIGN_LOCKOUT_FAILURES 1-10, SOVEREIGN_LOCKOUT_MINUTES > 0), set SOVEREIGN_LOGIN_ALERT=true "
    "with SOVEREIGN_LOGIN_ALERT_FAILURES / _MINUTES, and prove the alert channel (`manage.py send_test_alert`).": "保持 django-axes 开启（SOVEREIGN_LOCKOUT_FAILURES 为 1-10，SOVEREIGN_LOCKOUT_MINUTES > 0），设置 SOVEREIGN_LOGIN_ALERT=true 及 SOVEREIGN_LOGIN_ALERT_FAILURES / _MINUTES，并验证告警通道（`manage.py send_test_alert`）。",
    "Set SOVEREIGN_ALERT_WEBHOOK_URL to the security team's webhook (an address the outbound policy allows), run "
    "`python manage.py send_test_alert` and make sure it answers 2xx; keep a Celery worker running.": "将 SOVEREIGN_ALERT_WEBHOOK_URL 设为安全团队的 webhook（出站策略允许的地址），运行 `python manage.py send_test_alert` 并确认其返回 2xx；保持 Celery worker 运行。",
    # where the signing key and the KEK are (reports/data.signing_section, the report page's signing panel)
    "local key file {path} (mode 0600) — not in a cryptographic module": "本地密钥文件 {path}（权限 0600）——不在密码模块中",
    "PKCS#11 token (unreadable: {error})": "PKCS#11 令牌（无法读取：{error}）",
    "PKCS#11 token {token}: {device}, software token — development only": "PKCS#11 令牌 {token}：{device}，软件令牌——仅供开发使用",
    "PKCS#11 token {token}: {device}, hardware slot": "PKCS#11 令牌 {token}：{device}，硬件槽位",
    "{provider} provider, key file {path} — not in an HSM": "{provider} 提供方，密钥文件 {path}——不在 HSM 中",
    "unavailable: {error}": "不可用：{error}",
    # remedies
    "Have each listed user enrol a TOTP device at /accounts/2fa/setup/, or remove their privileged role; remove "
    "privileged permissions given directly or through other groups (assign the role instead).": "请列出的每个用户在 /accounts/2fa/setup/ 注册 TOTP 设备，或移除其特权角色；移除直接或通过其他组授予的特权权限（改为分配角色）。",
    "Run `manage.py code_manifest --write` at install or deploy (make run does it).": "在安装或部署时运行 `manage.py code_manifest --write`（make run 会执行）。",
    "Run migrations as an owner role and the portal as a separate application role with the grants of `python "
    "manage.py db_roles --print-sql` (docs/audit.md, 'Append-only in PostgreSQL'); re-enable the triggers with ALTER "
    "TABLE ... ENABLE TRIGGER.": "以所有者角色执行数据库迁移，门户则以单独的应用角色运行，并授予 `python manage.py db_roles --print-sql` 给出的权限（见 docs/audit.md 的 Append-only 一节）；用 ALTER TABLE ... ENABLE TRIGGER 重新启用触发器。",
    "Set SOVEREIGN_AUDIT_COLLECTOR_URL to the central log collector, make sure it answers 2xx, and keep Celery beat "
    "and a worker running (task apps.audit.tasks.ship_audit_events).": "将 SOVEREIGN_AUDIT_COLLECTOR_URL 设为集中日志收集器，确认其返回 2xx，并保持 Celery beat 和工作进程运行（任务 apps.audit.tasks.ship_audit_events）。",
    "Set SOVEREIGN_SSL_REDIRECT=true, SOVEREIGN_HSTS_SECONDS=31536000 and SOVEREIGN_SECURE_COOKIES=true. {rest}": "设置 SOVEREIGN_SSL_REDIRECT=true、SOVEREIGN_HSTS_SECONDS=31536000 和 SOVEREIGN_SECURE_COOKIES=true。{rest}",
    "Run `python manage.py check --deploy` and fix each warning listed in the evidence.": "运行 `python manage.py check --deploy` 并修复证据中列出的每条警告。",
    "Set SOVEREIGN_KEK_PROVIDER=pkcs11 (with SOVEREIGN_PKCS11_MODULE, _TOKEN, _PIN_FILE, _KEY_LABEL) and rotate the "
    "KEK so every data key is wrapped inside the HSM.": "设置 SOVEREIGN_KEK_PROVIDER=pkcs11（并设置 SOVEREIGN_PKCS11_MODULE、_TOKEN、_PIN_FILE、_KEY_LABEL），然后轮换 KEK，使所有数据密钥都在 HSM 内包装。",
    "Set archive_mode=on and an archive_command (or archive_library) that stores WAL off this host (restart needed "
    "for archive_mode); check the archiver's log for failures; SOVEREIGN_BACKUP_WAL_MAX_AGE_HOURS is {hours} h. {rest}": "设置 archive_mode=on 以及将 WAL 存放到本机以外的 archive_command（或 archive_library）（修改 archive_mode 需重启）；检查归档进程日志中的失败；SOVEREIGN_BACKUP_WAL_MAX_AGE_HOURS 为 {hours} 小时。{rest}",
    "Run `python manage.py restore_drill` (as a role that may create databases) and fix what it reports; a "
    "successful drill counts for {days} days.": "运行 `python manage.py restore_drill`（使用可创建数据库的角色）并修复其报告的问题；一次成功的演练在 {days} 天内有效。",
    "Uninstall the listed distributions (or add a requirement for them), install the pinned versions (`pip install "
    "-r requirements.txt`), pin every requirement with == and set SOVEREIGN_DEBUG=false.": "卸载列出的软件包（或为其添加依赖声明），安装锁定的版本（`pip install -r requirements.txt`），用 == 锁定每个依赖，并设置 SOVEREIGN_DEBUG=false。",
}
