from django.core.management.base import BaseCommand

from apps.audit.signing import get_signer, public_pem


class Command(BaseCommand):
    help = "Print the checkpoint signing key's public key (PEM), for the offline verifier."

    def handle(self, *args, **options):
        signer = get_signer()
        self.stderr.write(f"key id {signer.key_id}")
        self.stdout.write(public_pem(signer), ending="")
