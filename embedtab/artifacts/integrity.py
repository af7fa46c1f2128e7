"""Whether an artifact's folder holds exactly what embedtab wrote: every recorded file, each with
its recorded size and sha256 (through the hash cache), and nothing else."""

from __future__ import annotations

from pathlib import Path

from embedtab.artifacts.hashes import HashCache
from embedtab.artifacts.layout import artifact_path, is_server_cache
from embedtab.artifacts.manifest import ArtifactRecord, legacy_layout
from embedtab.errors import IntegrityError
from embedtab.fingerprint import directory_files


class Integrity:
    """Checks of the artifacts under `root` against their records."""

    def __init__(self, root: Path, hashes: HashCache):
        self.root = root
        self.hashes = hashes

    def missing_outputs(self, record: ArtifactRecord) -> list[str]:
        """Cheap check (existence and size) of a record's files."""
        base = artifact_path(self.root, record.kind, record.name)
        problems = []
        for out in record.outputs:
            file = base / out.path
            if not file.is_file():
                problems.append(f"{out.path} is missing")
            elif file.stat().st_size != out.bytes:
                problems.append(f"{out.path} changed size")
        return problems

    def damaged_files(self, record: ArtifactRecord, rehash: bool = False) -> list[str]:
        """Every way the artifact's folder differs from what embedtab wrote: missing files, changed
        bytes (sha256), files it did not write. A file unchanged since it was last hashed (same
        inode, size, mtime and ctime) keeps its hash; `rehash` reads every byte again."""
        base = artifact_path(self.root, record.kind, record.name)
        problems = self.missing_outputs(record)
        broken = {p.split(" ")[0] for p in problems}
        for out in record.outputs:
            if out.path not in broken and self.hashes.sha256(base / out.path, rehash) != out.sha256:
                problems.append(f"{out.path} differs from what embedtab wrote (sha256)")
        self.hashes.save()
        present = {str(p) for p in directory_files(base) if not is_server_cache(record.kind, str(p))} if base.is_dir() else set()
        problems += [f"{extra} is not embedtab's (an extra file)" for extra in sorted(present - {o.path for o in record.outputs})]
        return problems

    def verify(self, record: ArtifactRecord) -> Path:
        """Full check before trusting an artifact's files: every sha256 matches, nothing extra."""
        problems = self.damaged_files(record)
        if problems:
            more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
            raise IntegrityError(
                f"{record.key} is damaged: {'; '.join(problems[:5])}{more}; refusing to use it "
                "(rerun the command that made it to rebuild it)"
            )
        return artifact_path(self.root, record.kind, record.name)

    def current(self, record: ArtifactRecord | None, input_fingerprint: str) -> bool:
        """Made from these inputs, every file as written, in the current layout (an old one is rewritten)."""
        return (
            record is not None
            and record.input_fingerprint == input_fingerprint
            and not self.damaged_files(record)
            and not legacy_layout(record)
        )
