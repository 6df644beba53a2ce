from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import ServiceError
from apps.registry.imports import QUANTS, import_gguf


class Command(BaseCommand):
    help = (
        "Import a llama GGUF as a language-model version: convert it to an ONNX decoder set, encrypt "
        "every file under one data key and register it (docs/llm.md). A host-side tool: the audit "
        "events have no actor. Progress goes to stderr; the new version's id to stdout. Refusals "
        "exit non-zero with a stable code (gguf_malformed, gguf_unsupported, ...) and leave nothing."
    )

    def create_parser(self, prog_name, subcommand, **kwargs):
        # `--version N` is the model version here, not Django's "show the program's version"
        kwargs.setdefault("conflict_handler", "resolve")
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("file", help="path of the .gguf file")
        parser.add_argument("--name", required=True, help="model name in the catalogue (new or existing)")
        parser.add_argument("--quant", choices=QUANTS, default="int4", help="decoder weights (default int4)")
        parser.add_argument("--version", type=int, default=None, help="version number (default: the next)")
        parser.add_argument("--description", default="", help="model description when the model is new")

    def handle(self, *args, file, name, quant, version, description, **options):
        last = {"pct": -1}

        def progress(fraction: float, message: str) -> None:
            pct = int(fraction * 100)
            if pct != last["pct"]:
                last["pct"] = pct
                self.stderr.write(f"[{pct:3d}%] {message}")

        try:
            mv = import_gguf(
                path=file,
                model_name=name,
                quant=quant,
                version=version,
                description=description,
                actor=None,
                progress=progress,
            )
        except ServiceError as err:
            raise CommandError(f"{err.code}: {err.detail}") from err
        sig = mv.signature
        self.stderr.write(
            f"registered {mv} (id {mv.pk}): {sig['architecture']}, {sig['quantization']}, "
            f"context {sig['context_length']}, {len(sig['files'])} files, {mv.size_bytes} bytes"
        )
        self.stdout.write(str(mv.pk))
