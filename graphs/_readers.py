"""Readers that build a :class:`FactorGraph` from files and from pgmpy models.

Three sources are read: the BIF text format (:func:`from_bif`), the UAI
inference-competition format (:func:`from_uai`), and pgmpy's discrete Bayesian and
Markov networks (:func:`from_pgmpy`). :func:`load_network` reads the networks
shipped in ``bayeskit/graphs/data`` (sources and licence in its README.md).

A Bayesian network becomes one factor per conditional probability table (CPD).
Every CPD is checked column by column: for each configuration of the parents the
child's probabilities must be finite, non-negative and sum to 1 within ``1e-6``.
Columns off by more than ``1e-12`` (published networks are often printed to a few
digits) are renormalised, and the largest deviation of each such variable is kept in
``fg.provenance["renormalised"]``, so that an inference result can be traced back
to exactly the numbers it used.
"""

import gzip
import os
import re
from importlib import resources
from math import prod

import networkx as nx
import numpy as np

from ._factor_graph import FactorGraph

NETWORKS = ("asia", "alarm")

# a CPD column may miss 1 by this much (printing round-off) and is then renormalised
SUM_TOLERANCE = 1e-6
# columns closer to 1 than this are left alone and not reported
RENORMALISE_THRESHOLD = 1e-12


def load_network(name: str) -> FactorGraph:
    """A Bayesian network shipped with bayeskit, read by :func:`from_bif`.

    Parameters
    ----------
    name : {"asia", "alarm"}
        ASIA (Lauritzen & Spiegelhalter 1988; 8 variables) or ALARM (Beinlich et al.
        1989; 37 variables), as BIF files from the bnlearn repository.

    Returns
    -------
    FactorGraph
        One factor per CPD; ``provenance["network"]`` is ``name``.
    """
    if name not in NETWORKS:
        raise ValueError(f"name must be one of {NETWORKS}, got {name!r}")
    resource = resources.files("bayeskit.graphs") / "data" / f"{name}.bif.gz"
    # as_file: the package may live in a zip, where a resource is not a path
    with resources.as_file(resource) as path:
        fg = from_bif(path)
    fg.provenance["network"] = name
    return fg


# --------------------------------------------------------------------------- BIF

# One token: a comment or whitespace (skipped), a quoted name, a punctuation mark, or a
# bare word. "," and "|" only separate tokens in BIF, so they are skipped too. Words
# may hold "/" (states such as "Asy/Patch") but not a comment opener.
_BIF_TOKEN = re.compile(
    r"""(?P<skip>\s+|//[^\n]*|/\*.*?\*/|[,|])
      | "(?P<quoted>[^"]*)"
      | (?P<punct>[{}()\[\];])
      | (?P<word>(?:[^\s{}()\[\];,|"/]|/(?![/*]))+)
      | (?P<bad>.)""",
    re.VERBOSE | re.DOTALL,
)


class _BifTokens:
    """A cursor over the tokens of a BIF text; its errors name the line."""

    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []  # (kind: "word" or "punct", value, offset)
        for match in _BIF_TOKEN.finditer(text):
            kind = match.lastgroup
            if kind == "skip":
                continue
            if kind == "bad":
                raise self.error(f"unexpected character {match.group()!r}", match.start())
            if kind == "quoted":  # a quoted name is a word, even if it looks like a mark
                self.tokens.append(("word", match.group(kind).strip(), match.start()))
            else:
                self.tokens.append((kind, match.group(kind), match.start()))
        self.i = 0

    def error(self, message: str, offset: int | None = None) -> ValueError:
        if offset is None:
            offset = self.tokens[self.i][2] if self.i < len(self.tokens) else len(self.text)
        line = self.text.count("\n", 0, offset) + 1
        return ValueError(f"BIF line {line}: {message}")

    def done(self) -> bool:
        return self.i >= len(self.tokens)

    def found(self) -> str:
        return "end of file" if self.done() else repr(self.tokens[self.i][1])

    def peek(self) -> str | None:
        """The next punctuation mark; None for a word or at the end."""
        if self.done() or self.tokens[self.i][0] != "punct":
            return None
        return self.tokens[self.i][1]

    def next(self, what: str) -> str:
        if self.done():
            raise self.error(f"unexpected end of file, expected {what}")
        self.i += 1
        return self.tokens[self.i - 1][1]

    def word(self, what: str) -> str:
        if self.done() or self.tokens[self.i][0] != "word":
            raise self.error(f"expected {what}, found {self.found()}")
        return self.next(what)

    def expect(self, mark: str) -> None:
        if self.peek() != mark:
            raise self.error(f"expected {mark!r}, found {self.found()}")
        self.i += 1

    def words_until(self, mark: str, what: str) -> list[str]:
        """Words up to ``mark``, which is consumed."""
        out = []
        while self.peek() != mark:
            out.append(self.word(what))
        self.i += 1
        return out

    def skip_statement(self) -> None:
        """Skip past the next ";" (a ``property`` line, whose value is free text)."""
        while self.peek() != ";":
            self.next("';'")
        self.i += 1


def from_bif(path) -> FactorGraph:
    """Read a Bayesian network in the BIF text format (plain or gzipped).

    Parameters
    ----------
    path : str or os.PathLike
        A ``.bif`` file, or a gzipped one (recognised by its content, not its name).

    Returns
    -------
    FactorGraph
        The variables in file order with their states in file order, and one factor
        per variable, in the same order: the CPD of ``X`` with parents ``P1, P2`` is
        a factor over ``(X, P1, P2)`` with ``table[x, p1, p2] = P(X=x | p1, p2)``.
        ``provenance`` holds ``"source"`` (the path), ``"format"``, ``"network"``
        (the name in the file) and ``"renormalised"`` (see the module docstring).

    Raises
    ------
    ValueError
        On a syntax error (with its line), an undeclared variable or state, a CPD
        that is missing, repeated, has missing, repeated or surplus entries, or a
        column that is negative, NaN, or further than ``1e-6`` from summing to 1;
        or if the CPDs form a directed cycle.

    Notes
    -----
    Supported: ``network``, ``variable`` (``type discrete [ n ] { ... };``) and
    ``probability`` blocks; ``property`` lines are ignored. A CPD is given by rows
    ``(p1, p2) v1, ..., vn;``, by ``table`` (all entries, child slowest and the last
    parent fastest: the layout of the format's original definition and pgmpy's
    reader), with ``default`` filling the parent configurations that have no row.
    Commas and ``|`` are optional separators, as the format defines them.
    """
    tokens = _BifTokens(_read_text(path))
    network = None
    states: dict[str, tuple[str, ...]] = {}
    cpds: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
    while not tokens.done():
        keyword = tokens.word("'network', 'variable' or 'probability'")
        if keyword == "network":
            network = tokens.word("the network name") if tokens.peek() != "{" else None
            _skip_block(tokens)
        elif keyword == "variable":
            name, variable_states = _bif_variable(tokens)
            if name in states:
                raise ValueError(f"BIF variable {name!r} is declared twice")
            states[name] = variable_states
        elif keyword == "probability":
            child, parents, table = _bif_probability(tokens, states)
            if child in cpds:
                raise ValueError(f"BIF variable {child!r} has two probability blocks")
            cpds[child] = (parents, table)
        else:
            tokens.i -= 1
            raise tokens.error(f"expected 'network', 'variable' or 'probability', found {keyword!r}")
    missing = [name for name in states if name not in cpds]
    if missing:
        raise ValueError(f"BIF variables without a probability block: {missing}")
    fg = FactorGraph()
    fg.provenance.update(source=str(path), format="bif", network=network)
    for name, variable_states in states.items():
        fg.add_variable(name, len(variable_states), states=variable_states)
    _add_cpds(fg, [(child, *cpds[child][0]) for child in states], [cpds[child][1] for child in states], child_axis=0)
    return fg


def _skip_block(tokens: _BifTokens) -> None:
    """Skip a ``{ ... }`` block (the network block: only properties)."""
    tokens.expect("{")
    depth = 1
    while depth:
        mark = tokens.next("'}'")
        depth += {"{": 1, "}": -1}.get(mark, 0)


def _bif_variable(tokens: _BifTokens) -> tuple[str, tuple[str, ...]]:
    name = tokens.word("a variable name")
    tokens.expect("{")
    variable_states = None
    while tokens.peek() != "}":
        keyword = tokens.word(f"'type' or 'property' in variable {name!r}")
        if keyword == "property":
            tokens.skip_statement()
        elif keyword == "type":
            kind = tokens.word("a variable type")
            if kind != "discrete":
                raise ValueError(f"BIF variable {name!r} has type {kind!r}; only discrete variables are supported")
            tokens.expect("[")
            size = tokens.word(f"the number of states of {name!r}")
            tokens.expect("]")
            tokens.expect("{")
            variable_states = tuple(tokens.words_until("}", f"a state name of {name!r}"))
            tokens.expect(";")
            if not size.isdigit() or int(size) != len(variable_states):
                raise ValueError(
                    f"BIF variable {name!r} declares [{size}] states but lists "
                    f"{len(variable_states)}: {variable_states}"
                )
        else:
            tokens.i -= 1
            raise tokens.error(f"expected 'type' or 'property' in variable {name!r}, found {keyword!r}")
    tokens.expect("}")
    if variable_states is None:
        raise ValueError(f"BIF variable {name!r} has no 'type discrete [ n ] {{ ... }};' line")
    return name, variable_states


def _bif_probability(tokens: _BifTokens, states) -> tuple[str, tuple[str, ...], np.ndarray]:
    tokens.expect("(")
    child, *parents = tokens.words_until(")", "a variable name")  # "|" and "," were skipped as separators
    for v in (child, *parents):
        if v not in states:
            raise ValueError(f"BIF probability block of {child!r} names {v!r}, which has no variable block before it")
    if len(set(parents)) != len(parents) or child in parents:
        raise ValueError(f"BIF probability block of {child!r} repeats a variable: {(child, *parents)}")
    card = len(states[child])
    parent_cards = tuple(len(states[p]) for p in parents)
    num_columns = prod(parent_cards)
    # columns[j] is P(child | parent configuration j), configurations in row-major order
    columns = np.full((num_columns, card), np.nan)
    filled = np.zeros(num_columns, dtype=bool)
    default = None

    def numbers(what: str) -> np.ndarray:
        words = []
        while tokens.peek() != ";":
            words.append(tokens.word(f"a probability of {child!r}"))
        tokens.expect(";")
        try:
            values = np.array([float(w) for w in words])
        except ValueError:
            raise ValueError(f"BIF probability block of {child!r}: {what} holds a non-number: {words}") from None
        return values

    tokens.expect("{")
    while tokens.peek() != "}":
        if tokens.peek() == "(":
            tokens.i += 1
            config = tokens.words_until(")", f"a state of a parent of {child!r}")
            if len(config) != len(parents):
                raise ValueError(
                    f"BIF probability block of {child!r}: row ({', '.join(config)}) names "
                    f"{len(config)} states for {len(parents)} parents {tuple(parents)}"
                )
            index = []
            for parent, state in zip(parents, config, strict=True):
                if state not in states[parent]:
                    raise ValueError(
                        f"BIF probability block of {child!r}: {state!r} is not a state of {parent!r} "
                        f"(states {states[parent]})"
                    )
                index.append(states[parent].index(state))
            j = int(np.ravel_multi_index(index, parent_cards)) if parents else 0
            values = numbers(f"row ({', '.join(config)})")
            if values.size != card:
                raise ValueError(
                    f"BIF probability block of {child!r}: row ({', '.join(config)}) has "
                    f"{values.size} entries, expected {card}"
                )
            if filled[j]:
                raise ValueError(f"BIF probability block of {child!r}: row ({', '.join(config)}) is given twice")
            columns[j], filled[j] = values, True
        else:
            keyword = tokens.word(f"'table', 'default', 'property' or a row in the block of {child!r}")
            if keyword == "property":
                tokens.skip_statement()
            elif keyword == "table":
                values = numbers("the table")
                if values.size != card * num_columns:
                    raise ValueError(
                        f"BIF probability block of {child!r}: the table has {values.size} entries, "
                        f"expected {card * num_columns}"
                    )
                if filled.any():
                    raise ValueError(f"BIF probability block of {child!r} has both a table and rows")
                # the table lists the child's states slowest: entry [x, j] is P(x | configuration j)
                columns[:], filled[:] = values.reshape(card, num_columns).T, True
            elif keyword == "default":
                default = numbers("the default row")
                if default.size != card:
                    raise ValueError(
                        f"BIF probability block of {child!r}: the default row has {default.size} "
                        f"entries, expected {card}"
                    )
            else:
                tokens.i -= 1
                raise tokens.error(f"unexpected {keyword!r} in the probability block of {child!r}")
    tokens.expect("}")
    if default is not None:
        columns[~filled], filled[:] = default, True
    if not filled.all():
        j = int(np.argmin(filled))
        config = _describe(parents, [states[p] for p in parents], j)
        raise ValueError(
            f"BIF probability block of {child!r} has no row for parents {config} "
            f"({int((~filled).sum())} of {num_columns} rows missing)"
        )
    return child, tuple(parents), columns.T.reshape(card, *parent_cards)


# --------------------------------------------------------------------------- UAI


def from_uai(path) -> FactorGraph:
    """Read a network in the UAI inference-competition format (plain or gzipped).

    Parameters
    ----------
    path : str or os.PathLike
        A ``.uai`` file, or a gzipped one (recognised by its content, not its name).

    Returns
    -------
    FactorGraph
        Variables ``"x0"``, ``"x1"``, ... with states ``0, 1, ...``, and one factor
        per function, in file order, over its scope in the order written (the table
        is row-major over the scope, the last variable fastest). For a ``BAYES``
        file the last variable of each scope is the child, and each function is
        checked as a CPD (see the module docstring). ``provenance`` holds
        ``"source"``, ``"format"`` (``"uai-markov"`` or ``"uai-bayes"``) and
        ``"renormalised"`` (always empty for ``MARKOV``).

    Raises
    ------
    ValueError
        If the preamble or a table is malformed or has the wrong number of entries,
        or, for ``BAYES``, if a CPD column fails its check, a variable has no CPD or
        two, or the CPDs form a directed cycle.
    """
    words = _read_text(path).split()
    position = 0

    def take(what: str) -> str:
        nonlocal position
        if position >= len(words):
            raise ValueError(f"UAI file ends early, while reading {what}")
        position += 1
        return words[position - 1]

    def integer(what: str, minimum: int) -> int:
        word = take(what)
        try:
            value = int(word)
        except ValueError:
            raise ValueError(f"UAI {what} must be an integer, got {word!r}") from None
        if value < minimum:
            raise ValueError(f"UAI {what} must be >= {minimum}, got {value}")
        return value

    kind = take("the network type").upper()
    if kind not in ("MARKOV", "BAYES"):
        raise ValueError(f"UAI network type must be MARKOV or BAYES, got {kind!r}")
    n = integer("number of variables", 1)
    cards = [integer(f"cardinality of x{i}", 1) for i in range(n)]
    num_functions = integer("number of functions", 0)
    scopes = []
    for f in range(num_functions):
        size = integer(f"scope size of function {f}", 0)
        scope = tuple(integer(f"variable index in the scope of function {f}", 0) for _ in range(size))
        if any(i >= n for i in scope):
            raise ValueError(f"UAI function {f} has scope {scope}, but variables run 0..{n - 1}")
        scopes.append(scope)
    tables = []
    for f, scope in enumerate(scopes):
        shape = tuple(cards[i] for i in scope)
        count = integer(f"number of entries of function {f}", 0)
        if count != prod(shape):
            raise ValueError(
                f"UAI function {f} over {tuple(f'x{i}' for i in scope)} has {count} entries, "
                f"expected {prod(shape)} (the product of cardinalities {shape})"
            )
        if position + count > len(words):
            raise ValueError(
                f"UAI file ends inside the table of function {f}: {len(words) - position} of {count} entries"
            )
        try:
            values = np.array(words[position : position + count], dtype=float)
        except ValueError:
            raise ValueError(f"UAI function {f} has a table entry that is not a number") from None
        position += count
        tables.append(values.reshape(shape))
    if position != len(words):
        raise ValueError(
            f"UAI file has {len(words) - position} entries after the last table "
            f"(is a table longer than its entry count?)"
        )

    fg = FactorGraph()
    fg.provenance.update(source=str(path), format=f"uai-{kind.lower()}", renormalised={})
    names = [f"x{i}" for i in range(n)]
    for name, card in zip(names, cards, strict=True):
        fg.add_variable(name, card)
    named = [tuple(names[i] for i in scope) for scope in scopes]
    if kind == "MARKOV":
        for scope, table in zip(named, tables, strict=True):
            fg.add_factor(scope, table)
    else:
        if any(not scope for scope in named):
            raise ValueError("UAI BAYES function with an empty scope: each function must be a CPD")
        _add_cpds(fg, named, tables, child_axis=-1)
    return fg


# --------------------------------------------------------------------------- pgmpy


def from_pgmpy(model) -> FactorGraph:
    """Convert a pgmpy discrete Bayesian or Markov network.

    Parameters
    ----------
    model : pgmpy DiscreteBayesianNetwork or DiscreteMarkovNetwork
        (or their older names ``BayesianNetwork``, ``MarkovNetwork``).

    Returns
    -------
    FactorGraph
        Variables in the order of ``model.nodes()``, named by ``str()`` of pgmpy's
        names, with pgmpy's state names. A Bayesian network gives one factor per
        node, in node order, over ``(child, *evidence)`` (the CPD's own order),
        checked as described in the module docstring; a Markov network one factor
        per ``model.get_factors()``, unchanged. ``provenance`` holds ``"source"``
        (the model's class), ``"format"`` and ``"renormalised"``.

    Raises
    ------
    TypeError
        If ``model`` is not one of the supported pgmpy classes.
    ValueError
        If a node has no CPD (or no factor), two names coincide after ``str()``,
        the cardinality or state names of a variable differ between its CPDs or
        factors, or a CPD column fails its check.
    """
    expected = "a pgmpy DiscreteBayesianNetwork or DiscreteMarkovNetwork"
    try:  # pgmpy is optional: imported only here
        import pgmpy.models as pgm
    except ImportError:
        raise TypeError(f"expected {expected}, got {type(model).__name__} (and pgmpy is not installed)") from None
    # the old names are real classes before pgmpy 1.0 and raising stubs after
    bayesian = tuple(
        c
        for c in (getattr(pgm, "DiscreteBayesianNetwork", None), getattr(pgm, "BayesianNetwork", None))
        if isinstance(c, type)
    )
    markov = tuple(
        c
        for c in (getattr(pgm, "DiscreteMarkovNetwork", None), getattr(pgm, "MarkovNetwork", None))
        if isinstance(c, type)
    )
    if isinstance(model, bayesian):
        factors = []
        for node in model.nodes():
            cpd = model.get_cpds(node)
            if cpd is None:
                raise ValueError(f"pgmpy node {node!r} has no CPD")
            cards = tuple(int(c) for c in cpd.cardinality)
            values = np.asarray(cpd.get_values(), dtype=float).reshape(cards)
            factors.append((tuple(cpd.variables), cards, cpd.state_names, values))
        kind = "bayesian"
    elif isinstance(model, markov):
        factors = [
            (tuple(f.variables), tuple(int(c) for c in f.cardinality), f.state_names, np.asarray(f.values, dtype=float))
            for f in model.get_factors()
        ]
        kind = "markov"
    else:
        raise TypeError(f"expected {expected}, got {type(model).__module__}.{type(model).__qualname__}")

    # each variable's cardinality and states, which every CPD or factor must agree on
    names = {node: str(node) for node in model.nodes()}
    if len(set(names.values())) != len(names):
        raise ValueError(f"pgmpy node names collide when converted to str: {list(model.nodes())}")
    domain: dict = {}
    for variables, cards, state_names, _ in factors:
        for v, card in zip(variables, cards, strict=True):
            if v not in names:
                raise ValueError(
                    f"a pgmpy {'CPD' if kind == 'bayesian' else 'factor'} names {v!r}, which is not a node of the model"
                )
            v_states = tuple(state_names[v]) if state_names and v in state_names else tuple(range(card))
            if domain.setdefault(v, (card, v_states)) != (card, v_states):
                raise ValueError(
                    f"pgmpy variable {v!r} has cardinality and states {domain[v]} in one CPD or "
                    f"factor and {(card, v_states)} in another"
                )
    fg = FactorGraph()
    fg.provenance.update(source=f"pgmpy {type(model).__name__}", format=f"pgmpy-{kind}", renormalised={})
    for node in model.nodes():
        if node not in domain:
            raise ValueError(f"pgmpy node {node!r} is in no {'CPD' if kind == 'bayesian' else 'factor'}")
        card, v_states = domain[node]
        fg.add_variable(names[node], card, states=v_states)
    scopes = [tuple(names[v] for v in variables) for variables, *_ in factors]
    tables = [values for *_, values in factors]
    if kind == "bayesian":
        _add_cpds(fg, scopes, tables, child_axis=0)
    else:
        for scope, table in zip(scopes, tables, strict=True):
            fg.add_factor(scope, table)
    return fg


# --------------------------------------------------------------------------- shared


def _read_text(path) -> str:
    with open(os.fspath(path), "rb") as file:
        data = file.read()
    if data[:2] == b"\x1f\x8b":  # gzip's magic number: trust the content, not the suffix
        data = gzip.decompress(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:  # old files carry Latin-1 in names and comments
        return data.decode("latin-1")


def _add_cpds(fg: FactorGraph, scopes, tables, child_axis: int) -> None:
    """Check, renormalise and add CPD factors; ``scopes[k][child_axis]`` is the child.

    Also checks that each variable has exactly one CPD and that they form a DAG, and
    sets ``fg.provenance["renormalised"]``.
    """
    for scope in scopes:
        if len(set(scope)) != len(scope):
            raise ValueError(f"a CPD names a variable twice: {scope}")
    children = [scope[child_axis] for scope in scopes]
    counts = {v: 0 for v in fg.variables}
    for child in children:
        counts[child] += 1
    if any(c != 1 for c in counts.values()):
        raise ValueError(
            f"each variable must have exactly one CPD; none: "
            f"{[v for v, c in counts.items() if c == 0]}, more than one: "
            f"{[v for v, c in counts.items() if c > 1]}"
        )
    dag = nx.DiGraph()
    dag.add_nodes_from(fg.variables)
    dag.add_edges_from(
        (parent, child) for scope, child in zip(scopes, children, strict=True) for parent in scope if parent != child
    )
    if not nx.is_directed_acyclic_graph(dag):
        raise ValueError(f"the CPDs form a directed cycle: {nx.find_cycle(dag)}")

    renormalised = {}
    checked = []
    for scope, child, table in zip(scopes, children, tables, strict=True):
        parents = [v for v in scope if v != child]
        # work with the child axis first, as from_bif stores it
        table = np.moveaxis(np.asarray(table, dtype=float), child_axis, 0)
        table, deviation = _check_cpd(child, table, parents, [fg.states(p) for p in parents])
        if deviation > RENORMALISE_THRESHOLD:
            renormalised[child] = deviation
        checked.append(np.moveaxis(table, 0, child_axis))
    for scope, table in zip(scopes, checked, strict=True):
        fg.add_factor(scope, table)
    fg.provenance["renormalised"] = renormalised


def _check_cpd(child: str, table: np.ndarray, parents, parent_states) -> tuple[np.ndarray, float]:
    """Check the columns of ``table[x, *parents]`` and renormalise those off by more
    than ``RENORMALISE_THRESHOLD``; return the table and the largest deviation."""
    columns = table.reshape(table.shape[0], -1)
    sums = columns.sum(axis=0)
    checks = (
        (np.isnan(columns).any(axis=0), "contains NaN"),
        (np.isinf(columns).any(axis=0), "contains an infinite entry"),
        ((columns < 0).any(axis=0), "contains a negative entry"),
        (np.abs(sums - 1) > SUM_TOLERANCE, "does not sum to 1"),
    )
    for bad, what in checks:
        if bad.any():
            j = int(np.argmax(bad))
            raise ValueError(
                f"CPD of {child!r}: the column for parents {_describe(parents, parent_states, j)} "
                f"{what} (sum {float(sums[j]):.10g}; {int(bad.sum())} such column(s); tolerance "
                f"{SUM_TOLERANCE:g}): {columns[:, j].tolist()}"
            )
    deviations = np.abs(sums - 1)
    off = deviations > RENORMALISE_THRESHOLD
    if off.any():
        columns = columns.copy()
        columns[:, off] /= sums[off]
    return columns.reshape(table.shape), float(deviations.max(initial=0.0))


def _describe(parents, parent_states, j: int) -> str:
    """Parent configuration number ``j`` (row-major) as ``(A=a, B=b)``."""
    if not parents:
        return "()"
    index = np.unravel_index(j, [len(s) for s in parent_states])
    config = [states[i] for states, i in zip(parent_states, index, strict=True)]
    return "(" + ", ".join(f"{p}={s}" for p, s in zip(parents, config, strict=True)) + ")"
