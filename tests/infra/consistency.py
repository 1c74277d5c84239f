"""Consistency checks between the code and the Terraform under terraform/.

Terraform cannot be planned offline (no provider registry, no project), so these checks read
the HCL itself, parsed with python-hcl2, and compare what it declares with the names the code
uses: topics and delivery policy (shared/topology.py), entry points (main.py), environment
variables (shared/config.py), webhook variables (config/pipeline.toml), Firestore queries
(shared/queries.py) and the Compute names of each environment.

Every checker takes the parsed model (plain dicts and lists, see `load_terraform`) and returns
a list of human-readable problems; an empty list means consistent. Taking plain data keeps the
checkers testable on mutated copies, which is how the tests prove that each check can fail.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2

Model = dict[str, Any]
"""One parsed Terraform module: {"resource": {type: {name: body}}, "locals": {...},
"variable": {...}, "module": {...}, "output": {...}}, plus "modules": {dir name: Model}
for the root module's local child modules."""

PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
_EXPRESSION = re.compile(r"^\$\{(.*)\}$", re.DOTALL)
# python-hcl2 bookkeeping: block markers and the comments it keeps.
_PARSER_KEYS = {"__is_block__", "__comments__", "__inline_comments__"}


# ---- loading ------------------------------------------------------------------------------


def _normalise(value: Any) -> Any:
    """python-hcl2 keeps string quotes and marks blocks; strip both so values compare as data."""
    if isinstance(value, dict):
        return {_normalise(k): _normalise(v) for k, v in value.items() if k not in _PARSER_KEYS}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _merge_blocks(model: Model, parsed: Mapping[str, Any]) -> None:
    for kind, blocks in parsed.items():
        if kind == "locals":
            for block in blocks:
                model.setdefault("locals", {}).update(block)
        elif kind == "resource" or kind == "data":
            for block in blocks:
                for rtype, named in block.items():
                    model.setdefault(kind, {}).setdefault(rtype, {}).update(named)
        elif kind in ("variable", "module", "output"):
            for block in blocks:
                model.setdefault(kind, {}).update(block)
        else:
            model.setdefault(kind, []).extend(blocks)


def load_module(directory: Path) -> Model:
    model: Model = {}
    for path in sorted(directory.glob("*.tf")):
        with path.open(encoding="utf-8") as handle:
            _merge_blocks(model, _normalise(hcl2.load(handle)))
    return model


def load_terraform(root: Path) -> Model:
    """The root module, with each local child module under "modules" by directory name."""
    model = load_module(root)
    model["modules"] = {
        child.name: load_module(child) for child in sorted((root / "modules").iterdir()) if child.is_dir()
    }
    return model


def load_tfvars(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return dict(_normalise(hcl2.load(handle)))


# ---- names from the code ------------------------------------------------------------------


def entry_points_from_main(main_py: Path) -> list[str]:
    """The names main.py exports: its `__all__` if it has one, else its public top-level
    functions and imported names (the bundle's root re-exports the entry points)."""
    tree = ast.parse(main_py.read_text(encoding="utf-8"), filename=str(main_py))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            value = ast.literal_eval(node.value)
            return [str(name) for name in value]
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.append(node.name)
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            names.extend(alias.asname or alias.name for alias in node.names)
    return [name for name in names if not name.startswith("_")]


def env_var_names(config_module: Any) -> dict[str, str]:
    """Every ENV_* constant of the config module: constant name -> variable name."""
    return {
        name: value
        for name, value in vars(config_module).items()
        if name.startswith("ENV_") and isinstance(value, str)
    }


def literal_env_reads(files: Iterable[Path]) -> dict[str, list[str]]:
    """Environment variables read by literal name (os.environ.get("X"), os.environ["X"],
    os.getenv("X")) in the given files: name -> ["file:line", ...]. Reads through the
    ENV_* constants are not listed; env_var_names covers those."""
    found: dict[str, list[str]] = {}
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            name: ast.expr | None = None
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                if isinstance(func, ast.Attribute) and (
                    (func.attr == "get" and _is_os_environ(func.value))
                    or (func.attr == "getenv" and _is_name(func.value, "os"))
                ):
                    name = node.args[0]
            elif isinstance(node, ast.Subscript) and _is_os_environ(node.value):
                name = node.slice
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                found.setdefault(name.value, []).append(f"{path}:{name.lineno}")
    return found


def _is_name(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _is_os_environ(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and _is_name(node.value, "os")


# ---- helpers over the model ---------------------------------------------------------------


def _locals(model: Model) -> dict[str, Any]:
    return dict(model.get("locals", {}))


def _resource(model: Model, rtype: str, name: str) -> dict[str, Any] | None:
    body = model.get("resource", {}).get(rtype, {}).get(name)
    return body if isinstance(body, dict) else None


def _block(body: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The first (and in practice only) nested block `name` of a resource body."""
    value = body.get(name)
    if isinstance(value, list):
        value = value[0] if value else {}
    return value if isinstance(value, dict) else {}


def _expression(value: Any) -> str | None:
    if isinstance(value, str):
        match = _EXPRESSION.match(value)
        if match:
            return match.group(1).strip()
    return None


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")


def _all_modules(model: Model) -> Iterator[tuple[str, Model]]:
    yield "root", model
    for name, child in model.get("modules", {}).items():
        yield f"modules/{name}", child


# ---- topics and delivery policy -----------------------------------------------------------


def declared_topics(model: Model) -> set[str]:
    """Topics Terraform creates: the trigger topics and their dead-letter topics, provided the
    topic resource iterates over exactly those."""
    topic = _resource(model, "google_pubsub_topic", "topic")
    if topic is None or _expression(topic.get("for_each")) != "local.all_topics":
        return set()
    triggers = _locals(model).get("pubsub_triggers", {})
    names = set(triggers)
    names.update(spec["dead_letter_topic"] for spec in triggers.values() if spec.get("dead_letter_topic"))
    return names


def topic_problems(model: Model, topics_in_code: Iterable[str]) -> list[str]:
    declared = declared_topics(model)
    used = list(topics_in_code)
    problems = [
        f"topic {t!r} is used by the code but not declared in Terraform" for t in used if t not in declared
    ]
    problems.extend(
        f"topic {t!r} is declared in Terraform but the code never uses it"
        for t in sorted(declared - set(used))
    )
    return problems


@dataclass(frozen=True)
class DeliveryPolicy:
    topic: str
    entry_point: str
    min_backoff_seconds: int
    max_backoff_seconds: int
    max_delivery_attempts: int
    dead_letter_topic: str | None


def delivery_policy_problems(model: Model, expected: Iterable[DeliveryPolicy]) -> list[str]:
    triggers = _locals(model).get("pubsub_triggers", {})
    problems: list[str] = []
    seen: set[str] = set()
    for policy in expected:
        seen.add(policy.topic)
        spec = triggers.get(policy.topic)
        if spec is None:
            problems.append(f"trigger topic {policy.topic!r} has no entry in local.pubsub_triggers")
            continue
        for field in (
            "entry_point",
            "min_backoff_seconds",
            "max_backoff_seconds",
            "max_delivery_attempts",
            "dead_letter_topic",
        ):
            want, got = getattr(policy, field), spec.get(field)
            if want != got:
                problems.append(f"{policy.topic}: {field} is {got!r} in Terraform but {want!r} in the code")
    problems.extend(
        f"local.pubsub_triggers has {topic!r}, which the code does not trigger on"
        for topic in sorted(set(triggers) - seen)
    )
    return problems


# ---- functions ----------------------------------------------------------------------------


def function_entry_points(model: Model) -> set[str]:
    """Entry points that get a function: the keys of local.functions, provided the function
    resource iterates over them and uses the key as its entry point."""
    function = _resource(model, "google_cloudfunctions2_function", "fn")
    if function is None or _expression(function.get("for_each")) != "local.functions":
        return set()
    if _expression(_block(function, "build_config").get("entry_point")) != "each.key":
        return set()
    return set(_locals(model).get("functions", {}))


def entry_point_problems(model: Model, entry_points: Iterable[str]) -> list[str]:
    wanted = set(entry_points)
    declared = function_entry_points(model)
    problems = [f"entry point {name!r} has no function resource" for name in sorted(wanted - declared)]
    problems.extend(
        f"function resource {name!r} has no entry point in main.py" for name in sorted(declared - wanted)
    )
    return problems


def trigger_wiring_problems(
    model: Model, policies: Iterable[DeliveryPolicy], dead_letter_entry_point: str
) -> list[str]:
    """Each trigger topic invokes its entry point's function, and the dead-letter function
    listens on every dead-letter topic."""
    functions = _locals(model).get("functions", {})
    problems: list[str] = []
    for policy in policies:
        topics = functions.get(policy.entry_point, {}).get("trigger_topics", [])
        if not isinstance(topics, list) or not topics or topics[0] != policy.topic:
            problems.append(f"function {policy.entry_point!r} is not triggered by {policy.topic!r}")
    dead_letter = functions.get(dead_letter_entry_point, {}).get("trigger_topics")
    if _expression(dead_letter) != "local.dead_letter_topics":
        problems.append(f"function {dead_letter_entry_point!r} does not listen on local.dead_letter_topics")
    return problems


def env_var_problems(model: Model, required: Iterable[str]) -> list[str]:
    function = _resource(model, "google_cloudfunctions2_function", "fn")
    if function is None:
        return ["no google_cloudfunctions2_function.fn resource"]
    problems: list[str] = []
    if (
        _expression(_block(function, "service_config").get("environment_variables"))
        != "local.function_environment"
    ):
        problems.append("the functions' environment_variables is not local.function_environment")
    environment = _locals(model).get("function_environment", {})
    problems.extend(
        f"environment variable {name!r} is read by the code but not set on the functions"
        for name in sorted(set(required) - set(environment))
    )
    return problems


CONCURRENCY_VARIABLE = "function_request_concurrency"


def concurrency_problems(model: Model, local_server_threads: int) -> list[str]:
    """Each instance serves `function_request_concurrency` requests at once, with the whole vCPU
    Cloud Run requires for more than one and a server thread for each; by default as many as a
    local function server serves, so the local stack runs the code as concurrently as GCP does."""
    function = _resource(model, "google_cloudfunctions2_function", "fn")
    if function is None:
        return ["no google_cloudfunctions2_function.fn resource"]
    service = _block(function, "service_config")
    variable = f"var.{CONCURRENCY_VARIABLE}"
    problems: list[str] = []
    if _expression(service.get("max_instance_request_concurrency")) != variable:
        problems.append(f"max_instance_request_concurrency is not {variable}")
    if _expression(service.get("available_cpu")) != f'{variable} > 1 ? "1" : null':
        problems.append(f"available_cpu is not a whole vCPU whenever {variable} > 1")
    threads = _locals(model).get("function_environment", {}).get("THREADS")
    if _expression(threads) != f"tostring({variable})":
        problems.append(f"THREADS (functions-framework's server threads) is not {variable}")
    default = model.get("variable", {}).get(CONCURRENCY_VARIABLE, {}).get("default")
    if default != local_server_threads:
        problems.append(
            f"{CONCURRENCY_VARIABLE} defaults to {default}, a local function server serves {local_server_threads}"
        )
    return problems


def webhook_problems(model: Model, url_envs: Iterable[str], notify_entry_point: str) -> list[str]:
    variable = model.get("variable", {}).get("webhook_url_envs", {})
    declared = set(variable.get("default") or [])
    problems = [
        f"webhook variable {name!r} of the pipeline file has no secret in webhook_url_envs"
        for name in sorted(set(url_envs) - declared)
    ]
    if _locals(model).get("functions", {}).get(notify_entry_point, {}).get("webhook_secrets") is not True:
        problems.append(f"function {notify_entry_point!r} does not receive the webhook secrets")
    return problems


# ---- public access ------------------------------------------------------------------------


def public_access_problems(model: Model) -> list[str]:
    """No IAM member anywhere may be allUsers or allAuthenticatedUsers, not even through a
    local or a variable's default, and each HTTP function's invoker must be a group."""
    problems: list[str] = []
    for where, module in _all_modules(model):
        scanned: list[tuple[str, Any]] = [(f"{where}:locals", module.get("locals", {}))]
        scanned.extend(
            (f"{where}:var.{name}.default", body.get("default"))
            for name, body in module.get("variable", {}).items()
        )
        for rtype, named in module.get("resource", {}).items():
            for name, body in named.items():
                scanned.extend(
                    (path, value)
                    for path, value in _walk(body, f"{where}:{rtype}.{name}")
                    if isinstance(value, str)
                    and path.rsplit(".", 1)[-1].startswith(("member", "policy_data"))
                )
        for root, value in scanned:
            for path, item in _walk(value, root):
                if isinstance(item, str) and any(public in item for public in PUBLIC_MEMBERS):
                    problems.append(f"{path} grants access to {item!r}")
    invoker = _resource(model, "google_cloud_run_v2_service_iam_member", "http_invoker") or {}
    groups: Mapping[str, Any] = {}
    if invoker.get("for_each") == "${local.http_invoker_groups}":
        groups = _locals(model).get("http_invoker_groups", {})
    member = str(invoker.get("member", ""))
    for function in HTTP_FUNCTIONS:
        group = groups.get(function)
        if group is None:
            problems.append(f"no invoker binding for the {function} function")
        elif not member.startswith("group:") or not _GROUP_VARIABLE.fullmatch(str(group)):
            rendered = member.replace("${each.value}", str(group))
            problems.append(f"the {function} function's invoker is {rendered!r}, not a group variable")
    return problems


HTTP_FUNCTIONS = ("rollback", "promote", "approve", "dashboard")
"""The HTTP entry points: reachable from outside, so each needs a group as its only invoker."""
_GROUP_VARIABLE = re.compile(r"\$\{var\.[a-z_]+_invoker_group\}")
"""A variable whose validation accepts a group's e-mail address only."""


# ---- Firestore indexes --------------------------------------------------------------------


@dataclass(frozen=True)
class IndexField:
    field: str
    descending: bool


@dataclass(frozen=True)
class CompositeIndex:
    name: str
    collection: str
    fields: tuple[IndexField, ...]


@dataclass(frozen=True)
class Query:
    """A Firestore query reduced to what decides its index: equality (`==`, `in`) filters,
    inequality (range) filters, and the order."""

    name: str
    collection: str
    equality: frozenset[str]
    inequality: tuple[str, ...]
    order_by: tuple[IndexField, ...]

    def index_suffix(self) -> tuple[IndexField, ...]:
        # After the equality fields an index lists the inequality fields the query does not
        # order by (ascending), then the order-by fields in their order.
        ordered = {f.field for f in self.order_by}
        implicit = tuple(IndexField(field, False) for field in self.inequality if field not in ordered)
        return implicit + self.order_by

    def needs_composite_index(self) -> bool:
        """Equality-only queries merge single-field indexes, and a single field sorts by its
        own index; anything that filters on one field and orders by another needs a composite."""
        suffix = self.index_suffix()
        fields = set(self.equality) | {f.field for f in suffix}
        return bool(suffix) and len(fields) > 1


def indexes_from_terraform(model: Model) -> list[CompositeIndex]:
    index = _resource(model, "google_firestore_index", "composite")
    if index is None or _expression(index.get("for_each")) != "local.firestore_indexes":
        return []
    declared = _locals(model).get("firestore_indexes", {})
    return [
        CompositeIndex(
            name=name,
            collection=spec["collection"],
            fields=tuple(IndexField(f["field_path"], f["order"] == "DESCENDING") for f in spec["fields"]),
        )
        for name, spec in declared.items()
    ]


def index_covers(index: CompositeIndex, query: Query) -> bool:
    if index.collection != query.collection:
        return False
    suffix = query.index_suffix()
    equality = query.equality - {f.field for f in suffix}
    head, tail = index.fields[: len(equality)], index.fields[len(equality) :]
    if {f.field for f in head} != equality:
        return False
    # An index also serves the exact reverse order.
    reversed_suffix = tuple(IndexField(f.field, not f.descending) for f in suffix)
    return tail in (suffix, reversed_suffix)


def index_problems(indexes: Sequence[CompositeIndex], queries: Sequence[Query]) -> list[str]:
    problems: list[str] = []
    used: set[str] = set()
    for query in queries:
        if not query.needs_composite_index():
            continue
        covering = [index.name for index in indexes if index_covers(index, query)]
        if covering:
            used.update(covering)
        else:
            problems.append(f"query {query.name!r} on {query.collection!r} has no composite index")
    problems.extend(
        f"index {index.name!r} serves no declared query (it only costs writes)"
        for index in indexes
        if index.name not in used
    )
    return problems


def _get(item: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if isinstance(item, Mapping) and name in item:
            return item[name]
        if hasattr(item, name):
            return getattr(item, name)
    return default


def _order(entry: Any) -> IndexField:
    """An order-by entry: ("field", "DESCENDING"), "field desc", "-field", or an object with
    field/direction attributes."""
    if isinstance(entry, str):
        parts = entry.split()
        if entry.startswith("-"):
            return IndexField(entry[1:], True)
        return IndexField(parts[0], len(parts) > 1 and parts[1].lower().startswith("desc"))
    if isinstance(entry, tuple | list):
        field, direction = entry[0], entry[1] if len(entry) > 1 else "ASCENDING"
    else:
        field = _get(entry, "field", "field_path", "name")
        direction = _get(entry, "direction", "order", default="ASCENDING")
    return IndexField(str(field), str(direction).upper().startswith("DESC"))


def _fields(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(field) for field in value)


def queries_from_module(module: Any) -> list[Query]:
    """Read the queries shared/queries.py declares (`ALL_QUERIES`, or `QUERIES`): items with
    `collection`, equality fields (`equality` and `membership`), inequality fields (`range`)
    and `order_by`, as attributes or mapping keys."""
    found = _get(module, "ALL_QUERIES", "QUERIES", default=None)
    if found is None:
        raise ValueError("shared/queries.py declares neither ALL_QUERIES nor QUERIES")
    items = found.items() if isinstance(found, Mapping) else enumerate(found)
    queries: list[Query] = []
    for key, item in items:
        equality = _fields(_get(item, "equality", default=())) + _fields(_get(item, "membership", default=()))
        queries.append(
            Query(
                name=str(_get(item, "name", default=key)),
                collection=str(_get(item, "collection")),
                equality=frozenset(equality),
                inequality=_fields(_get(item, "range", "inequality", default=())),
                order_by=tuple(_order(entry) for entry in (_get(item, "order_by", default=()) or ())),
            )
        )
    return queries


# ---- Firestore TTL policies ----------------------------------------------------------------


def ttl_fields(model: Model) -> dict[str, tuple[str, str]]:
    """(collection, field) of each google_firestore_field resource that has a TTL policy."""
    fields = model.get("resource", {}).get("google_firestore_field", {})
    return {
        name: (str(body.get("collection")), str(body.get("field")))
        for name, body in fields.items()
        if isinstance(body, Mapping) and body.get("ttl_config") is not None
    }


def ttl_problems(model: Model, written: Mapping[str, Iterable[str]]) -> list[str]:
    """A TTL policy is only useful on a timestamp the code writes: on anything else it deletes
    nothing and suggests that some records expire when none do."""
    problems: list[str] = []
    for name, (collection, field) in sorted(ttl_fields(model).items()):
        if collection not in written:
            problems.append(f"TTL {name!r} is on collection {collection!r}, which the code never writes")
        elif field not in set(written[collection]):
            problems.append(f"TTL {name!r} is on {collection}.{field}, a field the code never writes")
    return problems


# ---- environments -------------------------------------------------------------------------


def module_compute_names(model: Model, module: str, app: str, environment: str) -> dict[str, str]:
    """The Compute names the environment module gives (app, environment), rendered from its
    locals (name = "${var.app}-${var.environment}", base_instance_template = "${local.name}-base", ...)."""
    local_values = _locals(model["modules"][module])

    def render(template: str) -> str:
        text = template.replace("${var.app}", app).replace("${var.environment}", environment)
        return (
            text.replace("${local.name}", render(local_values["name"])) if "${local.name}" in text else text
        )

    return {
        key: render(local_values[key])
        for key in ("base_instance_template", "health_check", "backend_service", "preview_backend_service")
    }


# ---- who may do what: the functions' accounts and Cloud Build's --------------------------

PULL_REQUEST_ACCOUNT = "google_service_account.cloudbuild_pull_requests"
READ_ONLY_ROLES = frozenset(
    {
        "roles/cloudbuild.builds.viewer",
        "roles/cloudfunctions.viewer",
        "roles/cloudscheduler.viewer",
        "roles/compute.viewer",
        "roles/datastore.viewer",
        "roles/eventarc.viewer",
        "roles/iam.securityReviewer",
        "roles/iam.workloadIdentityPoolViewer",
        "roles/logging.logWriter",
        "roles/pubsub.viewer",
        "roles/run.viewer",
        "roles/secretmanager.viewer",
        "roles/serviceusage.serviceUsageViewer",
        "roles/storage.bucketViewer",
        "roles/storage.objectViewer",
    }
)
"""What a pull request's build may hold: reading the project's resources, their IAM policies and
the state (no secret payloads, no basic role), and writing its own logs."""
_FUNCTION_ACCOUNT = re.compile(
    r'^google_service_account\.function\[(each\.key|each\.value\.function|"(\w+)")\]\.member$'
)
_QUOTED = re.compile(r'"([^"]*)"')


@dataclass(frozen=True)
class Grant:
    """One role a function's account holds; `on` names the topics of a publishing right."""

    function: str
    role: str
    on: frozenset[str] = frozenset()


def _iam_grants(model: Model) -> Iterator[tuple[str, dict[str, Any]]]:
    for rtype, named in model.get("resource", {}).items():
        if rtype.endswith(("_iam_member", "_iam_binding")):
            for name, body in named.items():
                yield f"{rtype}.{name}", body


def _roles_of(model: Model, body: Mapping[str, Any]) -> list[str]:
    """The role(s) a grant resource gives: a literal, or `each.key` over a local list of roles."""
    role = body.get("role")
    expression = _expression(role)
    if expression is None:
        return [str(role)]
    for_each = _expression(body.get("for_each")) or ""
    local = re.fullmatch(r"(?:toset\()?local\.(\w+)\)?", for_each)
    if expression == "each.key" and local and isinstance(_locals(model).get(local.group(1)), list):
        return [str(item) for item in _locals(model)[local.group(1)]]
    return [f"${{{expression}}}"]


def cloudbuild_split_problems(model: Model) -> list[str]:
    """Pull requests build as the read-only account and the main branch never does; the
    read-only account holds read-only roles only."""
    problems: list[str] = []
    pull_request = _resource(model, "google_cloudbuild_trigger", "pull_request")
    main = _resource(model, "google_cloudbuild_trigger", "main")
    if pull_request is None:
        problems.append("no Cloud Build trigger for pull requests")
    else:
        if _expression(pull_request.get("service_account")) != f"{PULL_REQUEST_ACCOUNT}.id":
            problems.append("the pull-request trigger does not run as the read-only account")
        if not _block(_block(pull_request, "github"), "pull_request"):
            problems.append("the pull-request trigger does not build pull requests")
        if (pull_request.get("substitutions") or {}).get("_PLAN_ONLY") != "true":
            problems.append("the pull-request trigger does not set _PLAN_ONLY=true")
    if main is None:
        problems.append("no Cloud Build trigger for the main branch")
    else:
        if PULL_REQUEST_ACCOUNT in str(main.get("service_account")):
            problems.append("the main-branch trigger runs as the read-only pull-request account")
        if _block(_block(main, "github"), "pull_request"):
            problems.append("the main-branch trigger, which deploys, builds pull requests")
    for where, body in _iam_grants(model):
        if PULL_REQUEST_ACCOUNT in str(body.get("member", "")):
            problems.extend(
                f"{where} gives the pull-request account {role}, which is not read-only"
                for role in _roles_of(model, body)
                if role not in READ_ONLY_ROLES
            )
    return problems


def function_grants(model: Model) -> tuple[set[Grant], list[str]]:
    """Every role the functions' accounts hold, derived from each function's entry in
    `local.functions` through the grant resources, and the problems found on the way: a grant
    that follows no declared rule, or an entry that does not say what it needs."""
    functions: dict[str, Any] = _locals(model).get("functions", {})
    firestore_roles: dict[str, str] = _locals(model).get("firestore_roles", {})
    grants: set[Grant] = set()
    problems: list[str] = []
    for name, entry in functions.items():
        access = entry.get("firestore_access")
        if access not in firestore_roles:
            problems.append(
                f"function {name!r}: firestore_access {access!r} is not one of {sorted(firestore_roles)}"
            )
    for where, body in _iam_grants(model):
        member = _expression(body.get("member")) or ""
        match = _FUNCTION_ACCOUNT.fullmatch(member)
        if match is None:
            continue
        literal_function = match.group(2)
        role_expression = _expression(body.get("role"))
        if literal_function:
            grants.update(Grant(literal_function, role) for role in _roles_of(model, body))
        elif where == "google_project_iam_member.function_firestore" and role_expression == (
            "local.firestore_roles[each.value.firestore_access]"
        ):
            grants.update(
                Grant(name, firestore_roles[entry["firestore_access"]])
                for name, entry in functions.items()
                if entry.get("firestore_access") in firestore_roles
            )
        elif where == "google_pubsub_topic_iam_member.function_publishes" and body.get("role") == (
            "roles/pubsub.publisher"
        ):
            grants.update(
                Grant(name, "roles/pubsub.publisher", frozenset(entry.get("publishes") or []))
                for name, entry in functions.items()
                if entry.get("publishes")
            )
        elif where == "google_cloud_run_v2_service_iam_member.trigger_invokes_function" and body.get(
            "role"
        ) == ("roles/run.invoker"):
            grants.update(
                Grant(name, "roles/run.invoker")
                for name, entry in functions.items()
                if entry.get("trigger_topics")
            )
        elif where == "google_project_iam_member.function_compute" and role_expression == (
            "google_project_iam_custom_role.compute[each.value.compute_role].id"
        ):
            grants.update(
                Grant(name, f"custom:{entry['compute_role']}")
                for name, entry in functions.items()
                if entry.get("compute_role")
            )
        else:
            problems.append(f"{where} gives a function's account {body.get('role')!r} by no declared rule")
    return grants, problems


FUNCTION_MATRIX_HEADING = "## Who may do what: the functions' accounts"


def documented_function_grants(readme: str) -> set[Grant]:
    """The matrix of terraform/README.md: rows `| \\`function\\` | \\`role\\` | on … | why |`; a
    custom role is written `custom:<name>`, and a publishing right names its topics in `on`."""
    grants: set[Grant] = set()
    section = (
        readme.split(FUNCTION_MATRIX_HEADING, 1)[-1].split("\n## ", 1)[0]
        if FUNCTION_MATRIX_HEADING in readme
        else ""
    )
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[0].startswith("`"):
            continue
        function, role = cells[0].strip("`"), re.findall(r"`([^`]+)`", cells[1])
        if not role:
            continue
        topics = (
            frozenset(re.findall(r"`([^`]+)`", cells[2]))
            if role[0] == "roles/pubsub.publisher"
            else frozenset()
        )
        grants.add(Grant(function, role[0], topics))
    return grants


# ---- what the code publishes ---------------------------------------------------------------

_PUBLISH_HELPERS = {"publish_step": 1, "publish_notify": None}
"""The use cases' publishing helpers: publish_step(services, topic, …) and publish_notify(…),
which always publishes to notify. Their own bodies are the primitive, not a caller."""


def _topic_constants(node: ast.AST) -> set[str]:
    return {
        sub.attr
        for sub in ast.walk(node)
        if isinstance(sub, ast.Attribute) and _is_name(sub.value, "topology") and sub.attr.isupper()
    }


def _publishes_and_calls(function: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[set[str], set[str]]:
    """The topology constants a function publishes to itself, and the names it calls or passes
    on (a step function handed to a helper counts as called). A topic that is not written out
    at the call counts as every topic the function names."""
    published: set[str] = set()
    called: set[str] = set()
    for node in ast.walk(function):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = (
            func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        )
        is_client_publish = (
            name == "publish" and isinstance(func, ast.Attribute) and isinstance(func.value, ast.Attribute)
            and func.value.attr == "publisher"
        )  # fmt: skip
        if name == "publish_notify":
            published.add("NOTIFY")
        elif name == "publish_step" or is_client_publish:
            position = 1 if name == "publish_step" else 0
            topic = node.args[position] if len(node.args) > position else None
            written = (
                topic is not None and isinstance(topic, ast.Attribute) and _is_name(topic.value, "topology")
            )
            published |= (
                {topic.attr} if written and isinstance(topic, ast.Attribute) else _topic_constants(function)
            )
        elif name:
            called.add(name)
        called |= {arg.id for arg in node.args if isinstance(arg, ast.Name)}
    return published, called


def _names_passed(call: ast.Call) -> set[str]:
    """The bare names a call passes on, positionally or by keyword (a function handed over to a
    value built at module level; inside functions, keywords mostly pass plain values)."""
    values = [*call.args, *(keyword.value for keyword in call.keywords)]
    return {value.id for value in values if isinstance(value, ast.Name)}


def published_topics(
    sources: Iterable[Path], entry_points: Iterable[str], topology_module: Any
) -> dict[str, set[str]]:
    """The topics each entry point can publish to, following calls by name through `sources`
    (the function modules and the use cases): an over-approximation, never an under one."""
    definitions: dict[str, tuple[set[str], set[str]]] = {}
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name not in _PUBLISH_HELPERS:
                published, called = _publishes_and_calls(node)
                known = definitions.get(node.name, (set(), set()))
                definitions[node.name] = (known[0] | published, known[1] | called)
        # A module-level value built from functions (an HTTP function's ReleaseControl names its
        # use-case call) calls what it is built from, for whoever passes it on.
        for statement in tree.body:
            if (
                isinstance(statement, ast.Assign)
                and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)
                and isinstance(statement.value, ast.Call)
            ):
                known = definitions.get(statement.targets[0].id, (set(), set()))
                definitions[statement.targets[0].id] = (known[0], known[1] | _names_passed(statement.value))

    def reachable(name: str, seen: set[str]) -> set[str]:
        if name in seen or name not in definitions:
            return set()
        seen.add(name)
        published, called = definitions[name]
        return published.union(*(reachable(callee, seen) for callee in called))

    return {
        entry_point: {str(getattr(topology_module, constant)) for constant in reachable(entry_point, set())}
        for entry_point in entry_points
    }


def publishing_problems(model: Model, published_by_code: Mapping[str, Iterable[str]]) -> list[str]:
    """Each function may publish to exactly the topics its code publishes to."""
    problems: list[str] = []
    functions: dict[str, Any] = _locals(model).get("functions", {})
    for name, published in sorted(published_by_code.items()):
        declared = set(functions.get(name, {}).get("publishes") or [])
        needed = set(published)
        problems.extend(
            f"function {name!r} publishes to {topic!r} but may not" for topic in sorted(needed - declared)
        )
        problems.extend(
            f"function {name!r} may publish to {topic!r}, which its code never does"
            for topic in sorted(declared - needed)
        )
    return problems


# ---- the artifact bucket ------------------------------------------------------------------

ARTIFACT_WRITER_ROLES = ("roles/storage.objectCreator",)
"""Roles that may add artifacts but neither replace nor delete one (overwriting needs delete)."""


def artifact_bucket_problems(model: Model, bucket: str = "artifacts") -> list[str]:
    """Ways the artifact bucket could lose an artifact that a live or retained release needs.

    Autohealing re-downloads a live release's artifact and a rollback its target's, at any age,
    so: no lifecycle rule may delete a current (LIVE) object, versioning must keep what a
    person deletes or overwrites, and whoever writes through IAM may only create objects.
    """
    body = _resource(model, "google_storage_bucket", bucket)
    if body is None:
        return [f"google_storage_bucket.{bucket} is not declared"]
    problems = []
    if _block(body, "versioning").get("enabled") is not True:
        problems.append(f"{bucket}: versioning is off, so a deleted or overwritten artifact is gone at once")
    rules = body.get("lifecycle_rule") or []
    for index, rule in enumerate(rules if isinstance(rules, list) else [rules]):
        action = _block(rule, "action")
        condition = _block(rule, "condition")
        if action.get("type") == "Delete" and condition.get("with_state") != "ARCHIVED":
            problems.append(
                f"{bucket}: lifecycle_rule[{index}] deletes current artifacts ({condition}); "
                "only noncurrent generations (with_state = ARCHIVED) may be deleted"
            )
    for name, binding in model.get("resource", {}).get("google_storage_bucket_iam_member", {}).items():
        if binding.get("bucket") == f"${{google_storage_bucket.{bucket}.name}}" and (
            binding.get("role") not in ARTIFACT_WRITER_ROLES and "viewer" not in str(binding.get("role"))
        ):
            problems.append(f"{name}: {binding.get('role')} on {bucket} may replace or delete artifacts")
    return problems
