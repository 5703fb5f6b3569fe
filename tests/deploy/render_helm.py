#!/usr/bin/env python3
"""Render the cased-agent Helm chart without helm.

No helm binary is available where the tests run, so this renders the small
subset of Go templates (and of Sprig) that deploy/helm/cased-agent uses, and
refuses everything else: a template construct it does not know is an error,
never silently passed through. That makes it safe to compare its output with
the plain manifests: if the chart grows a construct this file cannot render,
the tests fail instead of comparing something else.

Supported: `{{ pipeline }}`, `{{- ... -}}` whitespace trimming, `{{/* */}}`
comments, `if` / `else` / `end`, fields of `.Values`, `.Release`, `.Chart`,
string / number / boolean literals, parentheses, pipes, and the functions
quote, default, toYaml, nindent, indent, b64enc, toString, not, and, or, eq.
Missing values are errors (like `helm --strict`), not `<no value>`.

Also the generator of deploy/kubernetes/ (`--write-plain`), so the plain
manifests are the chart's default rendering and cannot drift from it.

Usage:
  render_helm.py [--set key=value]... [--name cased-agent] [--namespace cased-system]
  render_helm.py --write-plain      # regenerate deploy/kubernetes/
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "cased-agent"
PLAIN = ROOT / "deploy" / "kubernetes"


class TemplateError(Exception):
    pass


# --------------------------------------------------------------------------
# lexing


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)


def _lex(src: str, name: str) -> list[tuple[str, str]]:
    """Split into ("text", s) and ("action", s), applying trim markers."""
    out: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(src):
        text = src[pos : m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        if text:
            out.append(("text", text))
        body = m.group(2).strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            out.append(("action", body))
        trim_next = bool(m.group(3))
        pos = m.end()
    text = src[pos:]
    if trim_next:
        text = text.lstrip()
    if text:
        out.append(("text", text))
    for kind, s in out:
        if kind == "text" and ("{{" in s or "}}" in s):
            raise TemplateError(f"{name}: unbalanced template delimiters near {s[:40]!r}")
    return out


# --------------------------------------------------------------------------
# parsing: a tree of text, output pipelines and if/else blocks


def _parse(tokens: list[tuple[str, str]], name: str) -> list[Any]:
    stack: list[list[Any]] = [[]]
    ifs: list[dict[str, Any]] = []
    for kind, s in tokens:
        if kind == "text":
            stack[-1].append(("text", s))
            continue
        word = s.split(None, 1)[0] if s else ""
        if word == "if":
            node = {"cond": s[2:].strip(), "then": [], "else": []}
            stack[-1].append(("if", node))
            ifs.append(node)
            stack.append(node["then"])
        elif word == "else":
            if s != "else" or not ifs:
                raise TemplateError(f"{name}: unsupported or stray {{{{ {s} }}}}")
            stack.pop()
            stack.append(ifs[-1]["else"])
        elif word == "end":
            if s != "end" or not ifs:
                raise TemplateError(f"{name}: stray {{{{ {s} }}}}")
            stack.pop()
            ifs.pop()
        elif word in {"range", "with", "define", "template", "block", "include", "tpl"} or ":=" in s:
            raise TemplateError(f"{name}: {word!r} is not supported by this renderer")
        else:
            stack[-1].append(("out", s))
    if ifs:
        raise TemplateError(f"{name}: missing {{{{ end }}}}")
    return stack[0]


# --------------------------------------------------------------------------
# expressions

_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+)|(?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)'
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[|()]))"
)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    expr = expr.rstrip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"cannot parse {expr!r} at {expr[pos:]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _truthy(v: Any) -> bool:
    """Go template truth: false, 0, nil and empty things are false."""
    if v is None or v is False:
        return False
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v != 0
    if isinstance(v, (str, list, dict)):
        return len(v) > 0
    return True


def _to_string(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, str)):
        return str(v)
    if v is None:
        return ""
    raise TemplateError(f"cannot print {type(v).__name__} {v!r} as text")


def _to_yaml(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n")


def _indent(n: Any, s: Any) -> str:
    pad = " " * int(n)
    return pad + str(s).replace("\n", "\n" + pad)


def _and(*args: Any) -> Any:
    for a in args:
        if not _truthy(a):
            return a
    return args[-1]


def _or(*args: Any) -> Any:
    for a in args:
        if _truthy(a):
            return a
    return args[-1]


FUNCS = {
    "quote": lambda *a: " ".join(json.dumps(_to_string(x)) for x in a),
    "default": lambda d, v=None: v if _truthy(v) else d,
    "toYaml": _to_yaml,
    "nindent": lambda n, s: "\n" + _indent(n, s),
    "indent": _indent,
    "b64enc": lambda s: base64.b64encode(_to_string(s).encode()).decode(),
    "toString": _to_string,
    "not": lambda v: not _truthy(v),
    "and": _and,
    "or": _or,
    "eq": lambda a, b: a == b,
}


class _Expr:
    def __init__(self, expr: str, ctx: dict[str, Any]):
        self.toks = _tokens(expr)
        self.i = 0
        self.ctx = ctx
        self.expr = expr

    def run(self) -> Any:
        v = self.pipeline()
        if self.i != len(self.toks):
            raise TemplateError(f"trailing tokens in {self.expr!r}")
        return v

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def pipeline(self) -> Any:
        v = self.command(None, first=True)
        while self.peek() == ("punct", "|"):
            self.i += 1
            v = self.command(v, first=False)
        return v

    def command(self, piped: Any, first: bool) -> Any:
        tok = self.peek()
        if tok is None:
            raise TemplateError(f"empty command in {self.expr!r}")
        if tok[0] == "ident" and tok[1] not in ("true", "false", "nil"):
            name = tok[1]
            if name not in FUNCS:
                raise TemplateError(f"function {name!r} is not supported by this renderer")
            self.i += 1
            args = []
            while (t := self.peek()) is not None and t != ("punct", "|") and t != ("punct", ")"):
                args.append(self.operand())
            if not first:
                args.append(piped)
            return FUNCS[name](*args)
        if not first:
            raise TemplateError(f"cannot pipe into a value in {self.expr!r}")
        v = self.operand()
        t = self.peek()
        if t is not None and t != ("punct", "|") and t != ("punct", ")"):
            raise TemplateError(f"a value cannot take arguments in {self.expr!r}")
        return v

    def operand(self) -> Any:
        kind, s = self.toks[self.i]
        self.i += 1
        if kind == "str":
            return json.loads(s)
        if kind == "num":
            return int(s)
        if kind == "field":
            return self.field(s)
        if kind == "ident":
            if s in ("true", "false"):
                return s == "true"
            if s == "nil":
                return None
            raise TemplateError(f"function {s!r} used as an argument needs parentheses")
        if (kind, s) == ("punct", "("):
            v = self.pipeline()
            if self.peek() != ("punct", ")"):
                raise TemplateError(f"missing ) in {self.expr!r}")
            self.i += 1
            return v
        raise TemplateError(f"unexpected {s!r} in {self.expr!r}")

    def field(self, path: str) -> Any:
        cur: Any = self.ctx
        for part in path.strip(".").split("."):
            if not isinstance(cur, dict) or part not in cur:
                raise TemplateError(f"{path} is not defined (strict rendering)")
            cur = cur[part]
        return cur


def _eval(nodes: list[Any], ctx: dict[str, Any], out: list[str]) -> None:
    for kind, node in nodes:
        if kind == "text":
            out.append(node)
        elif kind == "out":
            out.append(_to_string(_Expr(node, ctx).run()))
        else:
            branch = node["then"] if _truthy(_Expr(node["cond"], ctx).run()) else node["else"]
            _eval(branch, ctx, out)


def render_template(src: str, ctx: dict[str, Any], name: str = "template") -> str:
    out: list[str] = []
    try:
        _eval(_parse(_lex(src, name), name), ctx, out)
    except TemplateError as e:
        raise TemplateError(f"{name}: {e}") from None
    return "".join(out)


# --------------------------------------------------------------------------
# the chart


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    res = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(res.get(k), dict):
            res[k] = deep_merge(res[k], v)
        else:
            res[k] = copy.deepcopy(v)
    return res


def parse_set(items: list[str]) -> dict[str, Any]:
    """helm-style `--set a.b=c` (values typed as YAML scalars: true, 4318)."""
    over: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value")
        cur = over
        parts = key.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return over


def render_files(
    overrides: dict[str, Any] | None = None,
    release: str = "cased-agent",
    namespace: str = "cased-system",
    chart: Path = CHART,
) -> dict[str, str]:
    """Template file name -> rendered text (empty renderings left out)."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    values = yaml.safe_load((chart / "values.yaml").read_text())
    values = deep_merge(values, overrides or {})
    ctx = {
        "Values": values,
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
        "Chart": {"Name": meta["name"], "Version": meta["version"], "AppVersion": meta["appVersion"]},
    }
    out = {}
    for path in sorted((chart / "templates").glob("*.yaml")):
        text = render_template(path.read_text(), ctx, path.name)
        if text.strip():
            out[path.name] = text.strip("\n") + "\n"
    return out


def render(overrides: dict[str, Any] | None = None, **kw: Any) -> str:
    files = render_files(overrides, **kw)
    return "".join(f"---\n# Source: cased-agent/templates/{n}\n{t}" for n, t in files.items())


def objects(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


PLAIN_HEADER = (
    "# GENERATED from deploy/helm/cased-agent (default values, namespace\n"
    "# cased-system) by `python3 tests/deploy/render_helm.py --write-plain`.\n"
    "# Do not edit it in the repository: change the chart and regenerate;\n"
    "# tests/deploy checks that this file equals the chart's rendering. To\n"
    "# deploy, install.sh fills in CASED_CLUSTER_ID (or edit your own copy).\n"
)

# Plain manifest file -> the chart values it is rendered with.
PLAIN_FILES: dict[str, dict[str, Any]] = {
    "namespace.yaml": {"createNamespace": True},
    "serviceaccount.yaml": {},
    "rbac.yaml": {},
    "daemonset.yaml": {},
    "networkpolicy.yaml": {},
    # Not applied by `kubectl apply -f deploy/kubernetes/` (a subdirectory):
    # the DaemonSet with eBPF on, to apply instead of daemonset.yaml.
    "extras/daemonset-ebpf.yaml": {"config": {"enableEbpf": True}},
}


def plain_expected() -> dict[str, str]:
    """Expected text of every generated file under deploy/kubernetes/."""
    out = {}
    for rel, over in PLAIN_FILES.items():
        src = Path(rel).name
        if src == "daemonset-ebpf.yaml":
            src = "daemonset.yaml"
        files = render_files(over)
        out[rel] = PLAIN_HEADER + files[src]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--name", default="cased-agent", help="release name")
    ap.add_argument("--namespace", default="cased-system", help="release namespace")
    ap.add_argument("--write-plain", action="store_true", help="regenerate deploy/kubernetes/")
    args = ap.parse_args(argv)
    try:
        if args.write_plain:
            for rel, text in plain_expected().items():
                (PLAIN / rel).parent.mkdir(parents=True, exist_ok=True)
                (PLAIN / rel).write_text(text)
                print(f"wrote deploy/kubernetes/{rel}")
            return 0
        sys.stdout.write(render(parse_set(args.set), release=args.name, namespace=args.namespace))
    except TemplateError as e:
        print(f"render_helm: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
