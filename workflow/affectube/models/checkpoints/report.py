"""What an import did: the format found, what was loaded, dropped and newly initialised."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class ImportReport:
    source: str
    format: str
    loaded: list[str] = field(default_factory=list)  # affectube parameter names filled from the file
    dropped: list[str] = field(default_factory=list)  # checkpoint keys not used (decoder, classifier head, ...)
    initialised: list[str] = field(default_factory=list)  # affectube parameters left at their fresh init
    notes: list[str] = field(default_factory=list)  # renames, position embeddings, caveats
    preprocessing: dict = field(default_factory=dict)  # the checkpoint's input_size, num_frames, mean, std

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"{self.source}: format {self.format}: loaded {len(self.loaded)} tensors, dropped {len(self.dropped)}"
                 f" ({_groups(self.dropped)}), newly initialised {len(self.initialised)} ({_groups(self.initialised)})"]
        lines += [f"  note: {n}" for n in self.notes]
        if self.preprocessing:
            lines.append(f"  preprocessing: {self.preprocessing}")
        return "\n".join(lines)


def _groups(keys: list[str]) -> str:
    """``decoder.*, head.*``: the top-level prefixes of ``keys``."""
    seen: list[str] = []
    for k in keys:
        g = k.split(".")[0] + (".*" if "." in k else "")
        if g not in seen:
            seen.append(g)
    return ", ".join(seen) or "none"
