"""``pgrpo groups fit|assign``: discover preference groups from a data file, and label new users with them.

    pgrpo groups fit --data users.jsonl --features profile --kind text --model_dir groups/ --output users.grouped.jsonl
    pgrpo groups fit --data users.csv --features age income --kind numeric --num_groups 4 --model_dir g/ --output o.csv
    pgrpo groups assign --model_dir groups/ --data new_users.jsonl --output new_users.grouped.jsonl

``fit`` clusters the rows (``pgrpo.groups.discovery``), saves the model directory and writes a copy of the data with
the group column; ``assign`` labels any rows (cold start) with a saved model. Both print the group sizes. The output
and the model directory are checked before any work, and are never replaced without ``--overwrite true``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pgrpo.command import Command
from pgrpo.groups.discovery import GroupDiscovery, check_model_dir
from pgrpo.groups.tables import check_output, read_table, write_with_column


@dataclass
class GroupsArguments:
    """`pgrpo groups fit|assign`: preference groups from text or numeric user features (k-means), with cold start."""

    action: str | None = field(
        default=None,
        metadata={
            "help": "fit: cluster --data, save --model_dir, write --output; assign: label --data with a saved model.",
            "choices": ["fit", "assign"],
        },
    )
    data: str = field(default="", metadata={"help": "Input rows: .jsonl/.json (JSON lines), .csv or .parquet."})
    output: str = field(default="", metadata={"help": "Copy of --data with the group column (same format)."})
    model_dir: str = field(
        default="", metadata={"help": "fit: where to save the group model; assign: the saved model to use."}
    )
    features: list[str] = field(
        default_factory=list,
        metadata={"help": "fit: feature column(s); one for --kind text, one or more for --kind numeric."},
    )
    kind: str = field(
        default="text",
        metadata={
            "help": "fit: text (one column embedded by all-MiniLM-L6-v2) or numeric (columns standardized).",
            "choices": ["text", "numeric"],
        },
    )
    num_groups: int = field(
        default=0, metadata={"help": "fit: number of groups k >= 2; 0 chooses k in 2..max_groups by silhouette."}
    )
    max_groups: int = field(default=8, metadata={"help": "fit: largest k tried when --num_groups 0."})
    seed: int = field(default=0, metadata={"help": "fit: k-means seed (and of the silhouette row sample)."})
    group_column: str | None = field(
        default=None,
        metadata={"help": "Column to write (default: group for fit; the model's own column for assign)."},
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "Replace an existing --output, a non-empty --model_dir (fit) and an existing group column."},
    )


def summary(discovery: GroupDiscovery, groups: list[int]) -> str:
    """Group sizes of ``groups``, the silhouette of the fit, and each group's representative training row."""
    counts = [groups.count(group) for group in range(len(discovery.sizes))]
    scores = ", ".join(f"k={k}: {score:.3f}" for k, score in discovery.silhouette_by_k.items())
    lines = [
        f"{len(groups)} rows in {len(counts)} groups (fit silhouette {discovery.silhouette:.3f}; {scores})",
        f"{'group':>5}  {'rows':>7}  {'share':>6}  representative training row",
    ]
    for group, count in enumerate(counts):
        example = ", ".join(
            f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value!r}"
            for name, value in discovery.representatives[group].items()
        )
        example = example if len(example) <= 90 else example[:87] + "..."
        lines.append(f"{group:>5}  {count:>7}  {count / max(len(groups), 1):>6.1%}  {example}")
    return "\n".join(lines)


def groups_command(args: GroupsArguments) -> int:
    if args.action is None:
        raise ValueError("Give an action: pgrpo groups fit ... or pgrpo groups assign ... (see pgrpo groups --help).")
    required = {"data": args.data, "output": args.output, "model_dir": args.model_dir}
    if args.action == "fit":
        required["features"] = args.features
    missing = [f"--{name}" for name, value in required.items() if not value]
    if missing:
        raise ValueError(f"pgrpo groups {args.action} needs {' '.join(missing)} (see pgrpo groups --help).")
    check_output(args.data, args.output, args.overwrite)
    if args.action == "fit":
        check_model_dir(args.model_dir, args.overwrite)
        discovery = GroupDiscovery(
            args.features,
            args.kind,
            args.num_groups,
            max_groups=args.max_groups,
            group_column=args.group_column or "group",
            seed=args.seed,
        )
    else:
        discovery = GroupDiscovery.load(args.model_dir)
    column = args.group_column or discovery.group_column
    frame = read_table(args.data)
    if column in frame.columns and not args.overwrite:
        raise ValueError(
            f"{args.data} already has a column {column!r}; pass --group_column NAME or --overwrite true to replace it."
        )
    if args.action == "fit":
        groups = discovery.fit(frame).train_groups
        discovery.save(args.model_dir, args.overwrite)
    else:
        groups = discovery.assign(frame)
    write_with_column(args.data, args.output, column, groups, args.overwrite)
    print(summary(discovery, groups.tolist()))
    print(
        f"wrote {args.output} (column {column!r})"
        + (f" and the model {args.model_dir}" if args.action == "fit" else "")
    )
    return 0


GROUPS = Command(arguments=(GroupsArguments,), run=groups_command, positional=("action",))
