from django.core.management.base import BaseCommand

from apps.audit.signing import get_signer, public_key_text


class Command(BaseCommand):
    help = (
        "Print the checkpoint signing key's public key for the offline verifier: PEM for ECDSA P-256, "
        "or in 国密 mode the SM2 point as hex (04 || X || Y, 130 hex digits)."
    )

    def handle(self, *args, **options):
        signer = get_signer()
        self.stderr.write(f"key id {signer.key_id} ({signer.sig_alg})")
        self.stdout.write(public_key_text(signer), ending="")
