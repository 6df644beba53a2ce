"""An import-linter contract type: apps reach each other only through their public surface.

An app's public surface is the modules (or packages) named in `public` — by default `models`,
`services` and `selectors` (docs/architecture.md). Any import from one app into another app's
other modules (`api`, `admin`, `views`, `tasks`, internal helpers such as `audit.chain`) breaks the
contract; so does importing a private module (`_name`) of another app. Apps listed in `open` (the
floor, `apps.core`) may be imported anywhere. Importers under `exempt` (the project package, the
generated migrations) are not checked: the project composes the apps, and migrations are frozen.
"""

from __future__ import annotations

import grimp
from importlinter import Contract, ContractCheck, fields, output


class PublicSurfaceContract(Contract):
    type_name = "public_surface"

    container = fields.StringField()
    public = fields.ListField(subfield=fields.StringField())
    also_public = fields.ListField(subfield=fields.StringField(), required=False)
    open = fields.ListField(subfield=fields.StringField(), required=False)
    exempt = fields.ListField(subfield=fields.StringField(), required=False)

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        container = self.container
        depth = container.count(".") + 1
        public = set(self.public)
        also_public = set(self.also_public or [])
        open_apps = set(self.open or [])
        exempt = list(self.exempt or [])
        broken = []
        for imp in graph.find_matching_direct_imports(import_expression=f"{container}.** -> {container}.**"):
            importer, imported = imp["importer"], imp["imported"]
            src, dst = importer.split("."), imported.split(".")
            if src[depth] == dst[depth] or dst[depth] in open_apps:
                continue
            if any(importer == e or importer.startswith(e + ".") or _matches(importer, e) for e in exempt):
                continue
            target = ".".join(dst[: depth + 2])  # apps.<app>.<module>
            module = dst[depth + 1] if len(dst) > depth + 1 else None
            private = any(part.startswith("_") and not part.startswith("__") for part in dst[depth + 1 :])
            if module is not None and not private and (module in public or target in also_public):
                continue
            lines = tuple(d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported))
            broken.append((importer, imported, lines))
        return ContractCheck(kept=not broken, metadata={"broken": sorted(broken)})

    def render_broken_contract(self, check: ContractCheck) -> None:
        surface = ", ".join(sorted(self.public)) + (
            "; also " + ", ".join(sorted(self.also_public)) if self.also_public else ""
        )
        output.print(f"Apps import each other only through: {surface}.")
        output.new_line()
        for importer, imported, lines in check.metadata["broken"]:
            where = ", ".join(f"l.{n}" for n in lines)
            output.print_error(f"- {importer} -> {imported} ({where})", bold=False)
        output.new_line()


def _matches(module: str, pattern: str) -> bool:
    """`apps.*.migrations` style patterns: `*` is one name, the pattern covers descendants."""
    mparts, pparts = module.split("."), pattern.split(".")
    if len(mparts) < len(pparts):
        return False
    return all(p == "*" or p == m for p, m in zip(pparts, mparts, strict=False))
