"""What serving must look like, given the registry aliases (the single source of truth).

A crash between moving an alias and writing the split file / InferenceService leaves them
apart: `champion -> v2` while the split file still pins v1. Every later run is then rightly
blocked by the gate, so nothing would ever rewrite the file. Serving therefore converges on
the aliases itself — the server when it starts and on every watch cycle, the deploy stage on
every deploy — using this one pure rule:

- the champion served is the version the `champion` alias points to (when it is set);
- a canary or shadow is closed when it is the champion now, or when the `challenger` alias
  points to another version. With no `challenger` alias at all the file's canary stands (a
  canary opened by hand on `kfct serve`'s command line has none).
"""

from __future__ import annotations


def split_changes(
    champion_version: str | None,
    canary_version: str | None,
    canary_percent: float,
    mode: str,
    aliases: dict[str, str],
    champion_alias: str = "champion",
    challenger_alias: str = "challenger",
) -> tuple[dict, list[str]]:
    """Field changes that make a split state agree with `aliases` (empty when it already does)."""
    changes: dict = {}
    reasons: list[str] = []
    champ = aliases.get(champion_alias)
    if champ is not None and str(champion_version or "") != champ:
        changes["champion_version"] = champ
        reasons.append(f"split champion v{champion_version} -> v{champ} (alias {champion_alias})")
    effective_champion = champ if champ is not None else champion_version
    active = bool(canary_version) and (float(canary_percent or 0) > 0 or mode == "shadow")
    if active:
        chal = aliases.get(challenger_alias)
        if str(canary_version) == str(effective_champion or ""):
            changes.update(canary_version=None, canary_percent=0.0, mode="canary")
            reasons.append(f"canary v{canary_version} is the champion now: canary closed")
        elif chal is not None and chal != str(canary_version):
            changes.update(canary_version=None, canary_percent=0.0, mode="canary")
            reasons.append(
                f"canary v{canary_version} holds no {challenger_alias} alias "
                f"({challenger_alias} -> {('v' + chal) if chal else 'unset'}): canary closed"
            )
    return changes, reasons


def isvc_changes(
    live: dict | None, aliases: dict[str, str], champion_alias: str = "champion", challenger_alias: str = "challenger"
) -> tuple[dict, list[str]]:
    """Changes that make a live InferenceService (a dict as the API returns it, or None) agree with `aliases`.

    The version it serves is its `kfct/model-version` annotation. It must be the champion,
    except while the challenger is mid-canary (`canaryTrafficPercent` set and below 100):
    that split belongs to a rollout, which promotes or rolls back by itself.
    """
    champ = aliases.get(champion_alias)
    if champ is None:
        return {}, []
    live = live if isinstance(live, dict) else {}
    served = ((live.get("metadata") or {}).get("annotations") or {}).get("kfct/model-version")
    pct = ((live.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent")
    if served == champ or (served == aliases.get(challenger_alias) and pct not in (None, 100)):
        return {}, []
    return {"champion_version": champ}, [f"InferenceService served v{served}, alias {champion_alias} is v{champ}"]
