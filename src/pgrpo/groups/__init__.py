"""Preference-group discovery: k-means groups from text or numeric user features, saved, with cold start.

``GroupDiscovery`` (fit / assign / save / load), ``with_groups`` (add a label column to a Dataset or DataFrame) and
``discover_groups`` (fit on a train split, label train and evaluation). The ``pgrpo groups`` command is
``pgrpo.groups.command``; the method is described in ``docs/groups.md``.
"""

from pgrpo.groups.discovery import GroupDiscovery, discover_groups, with_groups

__all__ = ["GroupDiscovery", "discover_groups", "with_groups"]
