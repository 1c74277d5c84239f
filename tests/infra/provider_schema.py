"""The Terraform under terraform/ against the google provider's own schema, offline.

`terraform validate` needs the provider binary from the registry; this check needs neither. The
prebuilt provider bindings on PyPI (`cdktn-provider-google`, pinned in requirements-dev.txt to a
release of the provider line versions.tf asks for) ship the provider's schema as a jsii assembly:
one class per resource and data source, whose docs link the Terraform name, and one struct per
configuration block, whose properties are the block's arguments and nested blocks. jsii
camelCases the names and renames a few (`build` becomes `buildAttribute`, `geth_details`
becomes `fetchhDetails`), so each name is taken from the registry link in its docs
(`.../resources/compute_instance_template#machine_type`), never converted back from camelCase.

Every resource type, data source, provider argument, argument and nested block (plain or
`dynamic`) used in terraform/**/*.tf must exist there, blocks must be written as blocks and
arguments as arguments, required ones must be present, and the schema's provider version must
satisfy the `required_providers` constraint.

`python -m tests.infra.provider_schema [DIR]` prints one line per problem and exits 1 if any;
scripts/check-infra.sh runs it in `make lint`.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import re
import sys
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

PROVIDER_DISTRIBUTION = "cdktn-provider-google"
PROVIDER_NAME = "google"
ASSEMBLY_MEMBER = "package/.jsii"

# Terraform's own meta-arguments, which no provider schema lists.
RESOURCE_META_ARGUMENTS = frozenset({"count", "for_each", "depends_on", "provider"})
RESOURCE_META_BLOCKS = frozenset({"lifecycle", "provisioner", "connection"})
DATA_META_ARGUMENTS = RESOURCE_META_ARGUMENTS
DATA_META_BLOCKS = frozenset({"lifecycle"})
LIFECYCLE_NAMES = frozenset(
    {
        "create_before_destroy",
        "prevent_destroy",
        "ignore_changes",
        "replace_triggered_by",
        "precondition",
        "postcondition",
    }
)
DYNAMIC_NAMES = frozenset({"for_each", "iterator", "labels", "content"})
# python-hcl2's bookkeeping keys; `__is_block__` tells a block from an object-valued argument.
_IS_BLOCK = "__is_block__"
_PARSER_KEYS = frozenset({_IS_BLOCK, "__comments__", "__inline_comments__", "__start_line__", "__end_line__"})

_LINK = re.compile(r"\{@link (\S+) ([^}]+)\}")
_REGISTRY_DOCS = re.compile(
    r"/providers/[^/]+/[^/]+/(?P<version>[^/]+)/docs(?:/(?P<kind>resources|data-sources)/)?"
)


@dataclass(frozen=True)
class BlockSchema:
    """One configuration block: each name it accepts, None for an argument or the nested block's
    schema, and the names that must be present."""

    names: Mapping[str, BlockSchema | None] = field(default_factory=dict)
    required: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ProviderSchema:
    version: str
    resources: Mapping[str, BlockSchema]
    data_sources: Mapping[str, BlockSchema]
    provider: BlockSchema


# ---- reading the jsii assembly --------------------------------------------------------------


def assembly_archive() -> Path:
    """The jsii tarball inside the installed provider bindings (read as data, never imported:
    importing them would start the jsii JavaScript runtime)."""
    try:
        distribution = importlib.metadata.distribution(PROVIDER_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:  # permanent: the dev requirements are missing
        raise SystemExit(f"{PROVIDER_DISTRIBUTION} is not installed; run `make venv`") from exc
    for file in distribution.files or ():
        if str(file).endswith(".jsii.tgz"):
            return Path(str(distribution.locate_file(file)))
    raise SystemExit(f"{PROVIDER_DISTRIBUTION} {distribution.version} ships no jsii assembly")


def load_assembly(archive: Path) -> dict[str, Any]:
    """The assembly's JSON; jsii may store it gzip-compressed behind a redirect file."""
    with tarfile.open(archive) as tar:
        assembly = json.loads(_member(tar, ASSEMBLY_MEMBER))
        if assembly.get("schema") == "jsii/file-redirect":
            target = f"package/{assembly['filename']}"
            content = _member(tar, target)
            if assembly.get("compression") == "gzip":
                content = gzip.decompress(content)
            assembly = json.loads(content)
    return dict(assembly)


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    handle = tar.extractfile(name)
    if handle is None:
        raise SystemExit(f"{name} in the jsii archive is not a file")
    return handle.read()


def provider_schema(assembly: Mapping[str, Any]) -> ProviderSchema:
    types: Mapping[str, Any] = assembly["types"]
    structs: dict[str, BlockSchema] = {}
    resources: dict[str, BlockSchema] = {}
    data_sources: dict[str, BlockSchema] = {}
    provider: BlockSchema | None = None
    version = ""
    for definition in types.values():
        base = str(definition.get("base", ""))
        if definition.get("kind") != "class" or not base.endswith(
            (".TerraformResource", ".TerraformDataSource", ".TerraformProvider")
        ):
            continue
        link = _LINK.search(definition.get("docs", {}).get("summary", ""))
        docs = _REGISTRY_DOCS.search(link.group(1)) if link else None
        config = _config_struct(definition)
        if link is None or docs is None or config is None:
            continue
        schema = _struct_schema(types, config, structs)
        version = docs.group("version")
        if base.endswith(".TerraformProvider"):
            provider = schema
        elif docs.group("kind") == "data-sources":
            data_sources[link.group(2).strip()] = schema
        else:
            resources[link.group(2).strip()] = schema
    if provider is None or not resources:
        raise SystemExit("the jsii assembly holds no provider schema")
    return ProviderSchema(version=version, resources=resources, data_sources=data_sources, provider=provider)


def _config_struct(definition: Mapping[str, Any]) -> str | None:
    for parameter in definition.get("initializer", {}).get("parameters", []):
        if parameter.get("name") == "config":
            return str(parameter["type"].get("fqn")) or None
    return None


def _struct_schema(types: Mapping[str, Any], fqn: str, memo: dict[str, BlockSchema]) -> BlockSchema:
    if fqn in memo:
        return memo[fqn]
    names: dict[str, BlockSchema | None] = {}
    required: set[str] = set()
    for prop in _struct_properties(types, fqn):
        name = terraform_name(prop)
        nested = _nested_struct(types, prop["type"])
        names[name] = _struct_schema(types, nested, memo) if nested else None
        if not prop.get("optional"):
            required.add(name)
    memo[fqn] = BlockSchema(names=names, required=frozenset(required))
    return memo[fqn]


def _struct_properties(types: Mapping[str, Any], fqn: str) -> Iterator[Mapping[str, Any]]:
    """A struct's own properties and those of the structs it extends within the assembly (the
    Terraform meta-arguments it extends from cdktf are not the provider's)."""
    definition = types[fqn]
    yield from definition.get("properties", [])
    for parent in definition.get("interfaces", []):
        if parent in types:
            yield from _struct_properties(types, parent)


def terraform_name(prop: Mapping[str, Any]) -> str:
    """The Terraform name of a jsii property: the anchor of the registry link in its docs.

    >>> terraform_name({"name": "buildAttribute", "docs": {"remarks": "Docs at Terraform Registry: "
    ...     "{@link https://registry.terraform.io/providers/hashicorp/google/6.50.0/docs/resources/x#build X#build}"}})
    'build'
    >>> terraform_name({"name": "hugepageSize2M", "docs": {}})
    'hugepage_size2_m'
    """
    for link in _LINK.finditer(json.dumps(prop.get("docs", {}))):
        url = link.group(1)
        if "#" in url:
            return url.rsplit("#", 1)[1]
    # No link (rare): undo the camelCase, which is right for every plain name.
    return re.sub(r"(?<!^)([A-Z])", r"_\1", str(prop["name"])).lower()


def _nested_struct(types: Mapping[str, Any], type_ref: Mapping[str, Any]) -> str | None:
    """The struct a property's type refers to, directly, in a list or in a union: a nested block."""
    if "fqn" in type_ref:
        definition = types.get(type_ref["fqn"])
        if definition and definition.get("kind") == "interface" and definition.get("datatype"):
            return str(type_ref["fqn"])
        return None
    if "collection" in type_ref:
        return _nested_struct(types, type_ref["collection"]["elementtype"])
    for member in type_ref.get("union", {}).get("types", []):
        found = _nested_struct(types, member)
        if found:
            return found
    return None


def load_provider_schema() -> ProviderSchema:
    return provider_schema(load_assembly(assembly_archive()))


# ---- checking the Terraform -------------------------------------------------------------------


def _unquote(label: str) -> str:
    return label[1:-1] if len(label) >= 2 and label[0] == label[-1] == '"' else label


def _blocks(value: Any) -> list[dict[str, Any]] | None:
    """The bodies of a nested block as python-hcl2 parses it, or None if `value` is an argument."""
    if isinstance(value, list) and value and all(isinstance(v, dict) and v.get(_IS_BLOCK) for v in value):
        return value
    return None


def check_body(
    schema: BlockSchema,
    body: Mapping[str, Any],
    where: str,
    meta_arguments: frozenset[str] = frozenset(),
    meta_blocks: frozenset[str] = frozenset(),
) -> list[str]:
    problems: list[str] = []
    present: set[str] = set()
    for key, value in body.items():
        if key in _PARSER_KEYS:
            continue
        if key == "dynamic" and isinstance(value, list):
            # [{'"label"': {for_each, content, ...}}, ...]: one entry per dynamic block.
            for dynamic in value:
                for label, spec in dynamic.items():
                    if label not in _PARSER_KEYS:
                        present.add(_unquote(label))
                        problems += _check_dynamic(schema, _unquote(label), spec, where)
            continue
        present.add(key)
        if key in meta_arguments:
            continue
        if key in meta_blocks:
            if key == "lifecycle":
                for lifecycle in _blocks(value) or []:
                    unknown = set(lifecycle) - LIFECYCLE_NAMES - _PARSER_KEYS
                    problems += [f"{where}: unknown lifecycle argument {name!r}" for name in sorted(unknown)]
            continue
        if key not in schema.names:
            problems.append(f"{where}: unknown argument or block {key!r}")
            continue
        nested, bodies = schema.names[key], _blocks(value)
        if nested is None and bodies is not None:
            problems.append(f"{where}: {key!r} is an argument, written as a block")
        elif nested is not None and bodies is None:
            problems.append(f"{where}: {key!r} is a nested block, written as an argument")
        elif nested is not None:
            for index, nested_body in enumerate(bodies or []):
                suffix = f"[{index}]" if len(bodies or []) > 1 else ""
                problems += check_body(nested, nested_body, f"{where}.{key}{suffix}")
    missing = schema.required - present
    problems += [f"{where}: required {name!r} is missing" for name in sorted(missing)]
    return problems


def _check_dynamic(schema: BlockSchema, name: str, spec: Mapping[str, Any], where: str) -> list[str]:
    nested = schema.names.get(name)
    if nested is None:
        what = "an argument" if name in schema.names else "not a nested block of this schema"
        return [f"{where}: dynamic {name!r} is {what}"]
    problems = [
        f"{where}: dynamic {name!r}: unknown {key!r}"
        for key in sorted(set(spec) - DYNAMIC_NAMES - _PARSER_KEYS)
    ]
    for content in _blocks(spec.get("content")) or []:
        problems += check_body(nested, content, f"{where}.{name}")
    return problems


def check_parsed(parsed: Mapping[str, Any], schema: ProviderSchema, where: str) -> list[str]:
    """Every resource, data source and provider block of one parsed .tf file."""
    problems: list[str] = []
    for kind, meta_arguments, meta_blocks, known in (
        ("resource", RESOURCE_META_ARGUMENTS, RESOURCE_META_BLOCKS, schema.resources),
        ("data", DATA_META_ARGUMENTS, DATA_META_BLOCKS, schema.data_sources),
    ):
        for block in parsed.get(kind, []):
            for type_label, named in block.items():
                rtype = _unquote(type_label)
                for name_label, body in named.items():
                    if name_label in _PARSER_KEYS:
                        continue
                    label = f"{where}: {'data.' if kind == 'data' else ''}{rtype}.{_unquote(name_label)}"
                    if rtype not in known:
                        problems.append(
                            f"{label}: unknown {'data source' if kind == 'data' else 'resource'} type"
                        )
                        continue
                    problems += check_body(known[rtype], body, label, meta_arguments, meta_blocks)
    for block in parsed.get("provider", []):
        for name_label, body in block.items():
            name = _unquote(name_label)
            if name != PROVIDER_NAME:
                problems.append(f"{where}: provider {name!r} is not checked against any schema")
            else:
                problems += check_body(schema.provider, body, f"{where}: provider {name}")
    for block in parsed.get("terraform", []):
        for requirements in block.get("required_providers", []):
            constraint = _provider_constraint(requirements.get(PROVIDER_NAME))
            if constraint and not version_satisfies(schema.version, constraint):
                problems.append(
                    f"{where}: the schema's google provider {schema.version} is outside {constraint!r}; "
                    f"pin a {PROVIDER_DISTRIBUTION} release of that line"
                )
    return problems


def _provider_constraint(requirement: Any) -> str | None:
    if isinstance(requirement, dict):
        version = requirement.get("version")
        return _unquote(version) if isinstance(version, str) else None
    return None


def version_satisfies(version: str, constraint: str) -> bool:
    """Whether `version` meets a Terraform version constraint.

    >>> version_satisfies("6.50.0", ">= 6.10, < 7.0"), version_satisfies("7.1.0", ">= 6.10, < 7.0")
    (True, False)
    >>> version_satisfies("6.50.0", "~> 6.10"), version_satisfies("6.50.0", "~> 6.10.1")
    (True, False)
    """
    have = _numbers(version)
    for clause in constraint.split(","):
        match = re.fullmatch(r"\s*(>=|<=|!=|~>|>|<|=)?\s*v?([0-9][0-9.]*)\s*", clause)
        if not match:
            return False
        operator, wanted = match.group(1) or "=", _numbers(match.group(2))
        width = max(len(have), len(wanted))
        left, right = _pad(have, width), _pad(wanted, width)
        if operator == "~>":
            # The rightmost given part may grow: "~> 6.10" is ">= 6.10, < 7", "~> 6.10.1" is ">= 6.10.1, < 6.11".
            prefix = wanted[:-1] if len(wanted) > 1 else wanted
            upper = (*prefix[:-1], prefix[-1] + 1)
            ok = left >= right and _pad(have, len(upper))[: len(upper)] < upper
        else:
            ok = {
                "=": left == right,
                "!=": left != right,
                ">": left > right,
                ">=": left >= right,
                "<": left < right,
                "<=": left <= right,
            }[operator]
        if not ok:
            return False
    return True


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _pad(numbers: tuple[int, ...], width: int) -> tuple[int, ...]:
    return numbers + (0,) * (width - len(numbers))


def check_directory(root: Path, schema: ProviderSchema) -> list[str]:
    problems: list[str] = []
    for path in sorted(root.rglob("*.tf")):
        if ".terraform" in path.parts:
            continue
        with path.open(encoding="utf-8") as handle:
            problems += check_parsed(hcl2.load(handle), schema, str(path.relative_to(root.parent)))
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "terraform")
    schema = load_provider_schema()
    problems = check_directory(root, schema)
    for problem in problems:
        print(problem)
    files = len([p for p in root.rglob("*.tf") if ".terraform" not in p.parts])
    distribution = importlib.metadata.version(PROVIDER_DISTRIBUTION)
    verdict = f"{len(problems)} problem(s)" if problems else "ok"
    print(
        f"{files} files of {root} against the google provider {schema.version} schema "
        f"({PROVIDER_DISTRIBUTION} {distribution}): {verdict}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
