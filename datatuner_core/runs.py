"""Where a run's outputs live under the storage root (DESIGN.md, "Storage layout")."""

from __future__ import annotations

from dataclasses import dataclass

from . import registry, storage


def summary(command: str, output: str, manifest: dict, **fields) -> dict:
    """A command's one-line JSON summary: what ran, where it wrote, and the input stage's
    `read == written + quarantined` (from its manifest), then the command's own fields."""
    counts = manifest["counts"]
    return {
        "command": command,
        "output": output,
        **{key: counts[key] for key in ("read", "written", "quarantined")},
        **fields,
    }


def new_run_id(name: str) -> str:
    """`{name}-{UTC time}-{random}`: unique and sortable by time."""
    return f"{name}-{registry.new_version()}"


@dataclass(frozen=True)
class RunPaths:
    """The URIs of one run: `{root}/runs/{run_id}/{stage}` and its model versions."""

    root: str
    run_id: str

    @property
    def run(self) -> str:
        return storage.join_uri(self.root, "runs", self.run_id)

    def stage(self, name: str) -> str:
        return storage.join_uri(self.run, name)

    @property
    def report(self) -> str:
        return self.stage("report")

    def model(self, kind: str) -> str:
        """The version folder of this run's model of `kind` (the version is the run id)."""
        return registry.version_uri(self.root, kind, self.run_id)
