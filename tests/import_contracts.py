"""import-linter contract types that the built-in ones do not cover (`lint-imports` loads them).

`stdlib_only` is an allow-list: every module under `source_modules` may import the standard
library and the modules named in `allowed_modules` (with their descendants), nothing else.
A block-list ("no faust, no kafka, …") lets a new dependency slip in unnoticed; an allow-list
fails on it the day it is added. The pure policies are held to it.
"""

from __future__ import annotations

import sys

from importlinter import Contract, ContractCheck, fields, output


def _within(module: str, packages: set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


class StdlibOnlyContract(Contract):
    type_name = "stdlib_only"

    source_modules = fields.ListField(subfield=fields.StringField())
    allowed_modules = fields.ListField(subfield=fields.StringField(), required=False)

    def check(self, graph, verbose: bool) -> ContractCheck:
        sources = set(self.source_modules)  # type: ignore[arg-type]
        allowed = set(self.allowed_modules or ()) | sources  # type: ignore[operator]
        checked = {m for s in sources for m in ({s} | graph.find_descendants(s))}
        offending = sorted(
            (importer, imported)
            for importer in checked
            for imported in graph.find_modules_directly_imported_by(importer)
            if not _within(imported, allowed) and imported.split(".")[0] not in sys.stdlib_module_names)
        return ContractCheck(kept=not offending, warnings=[], metadata={"offending": offending})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for importer, imported in check.metadata["offending"]:
            output.print_error(f"{importer} imports {imported}, which is neither the standard library "
                               "nor an allowed module")
            output.new_line()
