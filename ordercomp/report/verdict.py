"""What the evidence says about the recommended order, in plain sentences: the CLI summary, the Order
page and the meeting report all say it with these words.

Each sentence follows a decision rule and says no more than it does. With a search that evaluated
whole orders: the probability that the recommended order is the best of those evaluated, the orders
it could not be separated from (the race's contenders: no paired interval over seeds and images put
them below it) and how much better the best of them could be (a sound choice only within the margin
that counts), and what was spent. With the paper's pairwise procedure alone: how many pairs their
intervals decide, how many on weak evidence, and how many are ties or forced; where every pair is a
tie, the order rests on leanings. With exhaustive validation: where the order ranks, and whether its regret is within the
best order's standard error.
"""
from __future__ import annotations

import math

from ..order.graph import LISTED_ORDERS
from ..order.plan import chain_text
from ..order.search import prefix_cost
from .figures import plural, share_text

SHOWN_ORDERS = 3  # orders named in a sentence before "and N more"
SETTLE_SEEDS = 8  # a suggested settle budget: this many more seeds for every order still in contention


def evidence_sentences(record: dict) -> list[str]:
    """The sentences for an exploration record, most important first."""
    search = record.get("search") or {}
    sentences = search_sentences(search, len(record.get("chain_steps") or ())) if search.get("verdict") else [pairs_sentence(record["outcomes"])]
    return sentences + exhaustive_sentences(record.get("exhaustive"))


def search_sentences(search: dict, chain_applications: int = 0) -> list[str]:
    """How sure the search is of its order, which orders it could not tell apart, and its cost (with the
    `chain_applications` that applied the chain on the test split, see `cost_sentence`)."""
    verdict = search["verdict"]
    confidence = verdict.get("confidence", search.get("confidence", 0.95))  # after settling, the stricter one it used
    sentences = [_probability(verdict, confidence) + _separation(verdict, confidence), cost_sentence(search, chain_applications)]
    return sentences + coverage_sentences(search.get("positions_not_allowed") or [])


def graph_orders_sentence(record: dict) -> str:
    """How many orders keep every precedence edge of the pair decisions, and whether the recommended chain is one of
    them: a whole-order search may measure an order that goes against an edge ahead of every order it ran."""
    if not record["edges"]:
        return "No pair decision set a precedence edge, so every order keeps the graph."
    count, chain = len(record["valid_chains"]), record["chain"]
    counted = f"{count} or more orders keep" if count >= LISTED_ORDERS else f"{count} order{'s keep' if count != 1 else ' keeps'}"
    broken = [f"{e['before']} → {e['after']}" for e in record["edges"]
              if e["before"] in chain and e["after"] in chain and chain.index(e["before"]) > chain.index(e["after"])]
    if not broken:
        return f"{counted} every precedence edge of the pair decisions; the recommended chain keeps them all."
    return (f"{counted} every precedence edge of the pair decisions; the recommended chain goes against "
            f"{', '.join(broken)}: the search measured it best of the whole orders it ran, whatever the pairs said.")


def coverage_sentences(not_allowed: list) -> list[str]:
    """Which positions forced pairs (one order only applies) keep a method out of: the cover could not reach them."""
    if not not_allowed:
        return []
    places: dict[str, list[int]] = {}
    for method, place in not_allowed:
        places.setdefault(method, []).append(place)
    ruled_out = "; ".join(f"{method} at position{'s' if len(p) > 1 else ''} {', '.join(map(str, p))}" for method, p in places.items())
    return [f"Forced pairs rule out {ruled_out}; the search put every method at every position they allow before any "
            "model-guided proposal."]


def _probability(verdict: dict, confidence: float) -> str:
    count = verdict["evaluated"]
    if count == 1:
        return "The recommended order is the only whole order evaluated"
    if verdict["probability"] is None:
        return (f"The recommended order scored best of the {count} evaluated; how likely it is the best cannot be "
                "estimated (one seed and no per-image evidence)")
    return f"The recommended order is the best of the {count} evaluated with probability {share_text(verdict['probability'])}"


def _separation(verdict: dict, confidence: float) -> str:
    if verdict["evaluated"] == 1:
        return "."
    if verdict["separated"]:
        return "; every other evaluated order is worse by a paired interval over seeds and images."
    tied = verdict["inseparable"]
    names = "; ".join(chain_text(chain) for chain in tied[:SHOWN_ORDERS])
    more = f" and {len(tied) - SHOWN_ORDERS} more" if len(tied) > SHOWN_ORDERS else ""
    return f"; it cannot be separated from {names}{more}" + _how_far_behind(verdict, confidence)


def _how_far_behind(verdict: dict, confidence: float) -> str:
    """How much better an order it cannot be separated from could be: within the margin that counts, the recommended
    order is a sound choice (and any of them, if none could be more than the margin worse either); beyond it, the
    choice is open (a record from before the bound was kept: only 'within noise')."""
    behind, margin = verdict.get("behind_at_most"), verdict.get("margin")
    if not behind or margin is None:
        return ": the top orders are within noise of each other."
    if behind["points"] is None:
        # the race's intervals take the seeds' k - 1 degrees of freedom, so one common seed draws none, per-image evidence or not
        return (f": {chain_text(behind['chain'])}{_scored(behind)} could be better by any amount: one seed draws no interval; "
                "more seeds would settle it.")
    points, interval = f"{behind['points']:.2f}", f"a {share_text(confidence)} paired interval over seeds and images"
    if behind["points"] <= margin:
        return (f": by {interval} none of them is more than {points} points better, within the {margin:g} points that "
                f"count, so {_who_is_sound(verdict, margin)}")
    counted = f", more than the {margin:g} points that count" if margin else ""
    return (f": by {interval} {chain_text(behind['chain'])}{_scored(behind)} could be up to {points} points "
            f"better{counted}, so the choice among them is open{_settled_so_far(verdict)}; more seeds would settle it.")


def _who_is_sound(verdict: dict, margin: float) -> str:
    """'any of them is a sound choice.' when none of them could be more than the margin worse than the recommended one
    either (or a record from before the gaps were kept); else the recommended order alone, and the order that could
    trail it by the most: an order that scored 5.7 points behind can still be inseparable on a few seeds."""
    worse = [gap for gap in verdict.get("gaps") or [] if gap["worse_at_most"] is None or gap["worse_at_most"] > margin]
    if not worse:
        return "any of them is a sound choice."
    far = max(worse, key=lambda gap: math.inf if gap["worse_at_most"] is None else gap["worse_at_most"])
    bound = ("could be worse by any amount" if far["worse_at_most"] is None
             else f"could be up to {far['worse_at_most']:.2f} points worse")
    more = f" (and {len(worse) - 1} more could be more than {margin:g} points worse)" if len(worse) > 1 else ""
    return (f"the recommended order is a sound choice, but not every one of them: {chain_text(far['chain'])}"
            f"{_scored(far)} {bound}{more}.")


def _settled_so_far(verdict: dict) -> str:
    """', even after 6 more seeds (96 applications) of settling' when settling ran and the choice stayed open."""
    settle = verdict.get("settle") or {}
    if not settle.get("spent"):
        return ""
    return f", even after {settle['seeds']} more seeds ({settle['spent']} applications) of settling"


def choice_is_open(verdict: dict | None) -> bool:
    """Whether an order the recommended one cannot be separated from could be better by more than the margin that
    counts (or nothing bounds it): then more seeds for those orders would settle the choice."""
    behind = (verdict or {}).get("behind_at_most")
    if not behind or verdict.get("margin") is None:
        return False
    return behind["points"] is None or behind["points"] > verdict["margin"]


def settle_suggestion(search: dict) -> int | None:
    """A settle budget for a rerun when the choice is open: what settling already had, plus SETTLE_SEEDS more seeds for
    the recommended order and every order it cannot be separated from (settling runs only those still in question, so
    it may spend less); None when the choice is not open."""
    verdict = search.get("verdict")
    if not choice_is_open(verdict):
        return None
    contenders = [tuple(verdict["chain"])] + [tuple(chain) for chain in verdict["inseparable"]]
    return (verdict.get("settle") or {}).get("budget", 0) + SETTLE_SEEDS * prefix_cost(contenders)


def _scored(behind: dict) -> str:
    """' (0.92 points behind on the 2 seeds both were measured on)' (behind: worse, whichever way the objective
    points), or nothing for a record without them."""
    if behind.get("lower") is None or not behind.get("seeds"):
        return ""
    side = "behind" if behind["lower"] >= 0 else "ahead"
    return f" ({abs(behind['lower']):.2f} points {side} on the {plural(behind['seeds'], 'seed')} both were measured on)"


def cost_sentence(search: dict, chain_applications: int = 0) -> str:
    """'X method applications were spent (Y per seed, Z on extra seeds), W% of exhaustive (E).' (a one-seed
    search: what went to the first seed, to the pairs on the others and to confirming the search's best there).
    With `chain_applications`, '; N more applied the chain to the base on the test split': the count the pages and the
    report state beside this sentence (`figures.applications`) holds those too, and 120 beside 124 read as a contradiction."""
    spent = search.get("applications")
    if not spent:
        return f"{search['applications_per_seed']} method applications per seed were spent."
    extra = f", {spent['race']} on extra seeds for the contenders" if spent["race"] else ""
    extra += f", {spent['settle']} on more seeds to settle the choice" if spent.get("settle") else ""
    searched = f"{spent['per_seed']} per seed for the search"
    if spent.get("search_seeds") == 1 and search.get("screened_orders"):  # a one-seed search, then its confirmation
        searched = (f"{spent['per_seed']} on the first seed for the pairs and a search of {len(search['screened_orders'])} "
                    f"orders, {spent['screen'] - spent['per_seed']} for the pairs on the other seeds, {spent['confirm']} "
                    f"measuring the search's best {len(search['orders'])} there")
    screened = ""
    if search.get("screen") is not None:
        screened = (f"; the search ran at {share_text(search['screen'])} of the fine-tuning epochs and {spent['confirm']} "
                    f"applications confirmed its best orders at the full budget, {spent['cost']:.0f} full-budget "
                    "applications in cost")
    chain = f"; {chain_applications} more applied the chain to the base on the test split" if chain_applications else ""
    return (f"{spent['total']} method applications were spent ({searched}{extra}"
            f"{screened}), {share_text(spent['share_of_exhaustive'])} of exhaustive ({spent['exhaustive']}){chain}.")


def pairs_sentence(outcomes: list[dict]) -> str:
    """What the pair decisions alone support, by the pair rule (interval excludes 0 and beats the margin). A pair
    where only one order applies is forced, not decided by evidence, and a decision on weak evidence is said apart."""
    pairs = [o for o in outcomes if not o["incompatible"] and not o.get("only_order")]
    forced = _forced_clause(len([o for o in outcomes if o.get("only_order")]))
    decided = [o for o in pairs if not o["tie"]]
    weak = [o for o in decided if o["weak_evidence"]]
    if not pairs:
        return "No two methods could be compared in both orders; the order follows what could be applied" + forced + "."
    if not decided:
        return (f"Every one of the {len(pairs)} pairs is a tie (each interval contains 0 or is under the minimum "
                "margin): the order rests on leanings within noise, not on evidence, and any order the pairs allow "
                "is as well supported" + forced + ".")
    if len(decided) == len(pairs) and not weak:
        return (f"All {len(pairs)} pairs compared in both orders are decided by their intervals (each excludes 0 "
                "and clears the margin): the evidence supports the order" + forced + ".")
    firm, ties = len(decided) - len(weak), len(pairs) - len(decided)
    parts = [f"{firm or 'none'} decided by their intervals" + (" on firm evidence" if weak else "")]
    parts += [f"{len(weak)} on weak evidence (one seed, or the difference within a standard error of the margin)"] if weak else []
    parts += [f"{ties} {'a tie' if ties == 1 else 'ties'}"] if ties else []
    return (f"Of the {len(pairs)} pairs compared in both orders, " + ", ".join(parts) + ": part of the order rests on "
            "leanings, not evidence" + forced + ".")


def _forced_clause(count: int) -> str:
    if not count:
        return ""
    return f"; {count} {'pair is' if count == 1 else 'pairs are'} forced, as only one order applies"


def exhaustive_sentences(summary: dict | None) -> list[str]:
    """Where the recommended order ranks among all orders, against the best order's standard error."""
    if not summary or summary.get("regret") is None:
        return []
    within = summary["regret"] <= summary["best_se"]
    return [f"Checked against all {summary['of']} orders: the recommended order ranks {summary['rank']}, "
            f"{summary['regret']:.2f} below the best order, "
            + (f"within that order's standard error ({summary['best_se']:.2f})." if within else
               f"more than that order's standard error ({summary['best_se']:.2f}).")]
