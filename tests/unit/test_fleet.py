"""The fleet file (shared/fleet.py): what a good one means, and that a bad one is refused whole with every
problem's line and key."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from shared import errors, fleet
from shared.settings import Cloud, Settings

GOOD = """\
apps:
  - name: diabetes
    source:
      repository: https://github.com/contoso/diabetes
      branch: main
      webhook_secret: "setting:SHIPBOT_GITHUB_SECRET"
    models: [diabetes]
    image: shipbot/diabetes
    environments:
      - name: dev
        target: {kind: local, port: 8091}
        rule: on_green
      - name: qa
        target: {kind: local, port: 8092}
        rule: manual
        approval: true
        soak: 30m
      - name: prod
        target: {kind: kubernetes, namespace: prod, deployment: app}
        rule: schedule
        schedule: "0 0 2 * * *"
        time_zone: Europe/Paris
        freeze:
          - {start: "2026-12-24T00:00:00+01:00", end: "2026-12-27T00:00:00+01:00", reason: holidays}
  - name: churn
    source: {repository: /srv/git/churn.git}
    image: shipbot/churn
    environments:
      - {name: staging, target: {kind: local, port: 8093}, rule: on_green}
"""


def test_a_good_fleet_reads_as_its_applications_and_their_chains():
    parsed = fleet.parse(GOOD)

    diabetes = parsed.app("diabetes")
    assert [env.name for env in diabetes.environments] == ["dev", "qa", "prod"]
    assert diabetes.before("qa").name == "dev" and diabetes.before("dev") is None
    qa, prod = diabetes.environment("qa"), diabetes.environment("prod")
    assert (qa.rule, qa.approval, qa.soak_seconds) == ("manual", True, 1800.0)
    assert prod.target.spec == "prod/app/model-api@app:80"
    holidays = dt.datetime(2026, 12, 25, 12, tzinfo=dt.UTC)
    assert prod.frozen(holidays).reason == "holidays" and prod.frozen(holidays + dt.timedelta(days=5)) is None
    assert parsed.app("churn").source.branch == "main"


def test_events_route_to_the_applications_they_name():
    parsed = fleet.parse(GOOD)

    assert [app.name for app in parsed.following("diabetes")] == ["diabetes", "churn"]  # churn names no model ...
    assert [app.name for app in parsed.following("churn")] == ["churn"]  # ... so it follows any
    assert parsed.following("diabetes", "mlflow") == []  # nobody's models come from the registry
    assert parsed.of_source("https://github.com/Contoso/diabetes.git", "main").name == "diabetes"
    assert parsed.of_source("https://github.com/contoso/diabetes", "dev") is None
    assert parsed.of_source("https://github.com/contoso/other", "main") is None
    assert parsed.of_image("shipbot/churn").name == "churn" and parsed.of_image("shipbot/x") is None


def test_an_application_is_found_by_name_or_as_the_only_one():
    parsed = fleet.parse(GOOD)

    with pytest.raises(errors.NotFound, match="there are 2 applications: name one"):
        parsed.app()
    with pytest.raises(errors.NotFound, match="no application 'nope'"):
        parsed.app("nope")
    with pytest.raises(errors.NotFound, match="has no environment 'staging'"):
        parsed.app("diabetes").environment("staging")


def problems(text: str) -> list[str]:
    with pytest.raises(fleet.FleetError) as caught:
        fleet.parse(text)
    return caught.value.problems


@pytest.mark.parametrize(("change", "expected"), [
    (("        rule: manual\n", "        rule: manual\n        colour: red\n"),
     "line 16, apps[diabetes].environments[qa].colour: unknown key"),
    (("port: 8091", "port: '8091'"), "line 11, apps[diabetes].environments[dev].target.port: Input should be a valid integer"),
    (("kind: kubernetes", "kind: nomad"), "line 19, apps[diabetes].environments[prod].target: unknown target kind 'nomad'"),
    (('schedule: "0 0 2 * * *"', 'schedule: "0 0 25 * * *"'), "line 21, apps[diabetes].environments[prod].schedule: "),
    (("time_zone: Europe/Paris", "time_zone: Mars/Olympus"),
     "line 22, apps[diabetes].environments[prod].time_zone: 'Mars/Olympus' is not an IANA time zone"),
    (('webhook_secret: "setting:SHIPBOT_GITHUB_SECRET"', "webhook_secret: hunter2"),
     "line 6, apps[diabetes].source.webhook_secret: write a reference to the secret"),
    (("soak: 30m", "soak: a while"), "line 17, apps[diabetes].environments[qa].soak: 'a while' is not a duration"),
    (("        rule: schedule\n", "        rule: on_green\n"),
     "line 18, apps[diabetes].environments[prod]: `schedule` goes with rule: schedule"),
    (('end: "2026-12-27T00:00:00+01:00"', 'end: "2026-12-20T00:00:00+01:00"'),
     "line 24, apps[diabetes].environments[prod].freeze[0]: a freeze window ends after it starts"),
    (('start: "2026-12-24T00:00:00+01:00"', 'start: "2026-12-24T00:00:00"'),
     "line 24, apps[diabetes].environments[prod].freeze[0].start: a freeze window's times need their UTC offset"),
])
def test_a_bad_value_is_refused_with_its_line_and_key(change, expected):
    old, new = change
    assert old in GOOD
    found = problems(GOOD.replace(old, new, 1))
    assert len(found) == 1 and found[0].startswith(expected), found


@pytest.mark.parametrize(("change", "expected"), [
    (("port: 8093", "port: 8092"), "line 29, apps[churn].environments[staging].target: this target (local port 8092) "
                                   "is diabetes/qa's already"),
    (("name: churn", "name: diabetes"), "line 25, apps[diabetes].name: the name diabetes is application 1's already"),
    (("image: shipbot/churn", "image: shipbot/diabetes"),
     "line 27, apps[churn].image: the image repository shipbot/diabetes is diabetes's already"),
    (("source: {repository: /srv/git/churn.git}", "source: {repository: 'https://github.com/contoso/diabetes.git'}"),
     "line 26, apps[churn].source: https://github.com/contoso/diabetes.git branch main is diabetes's already"),
    (("      - name: prod\n", "      - name: dev\n"),
     "line 18, apps[diabetes].environments[dev].name: dev is twice in diabetes's chain"),
])
def test_what_two_applications_or_environments_share_is_refused(change, expected):
    old, new = change
    assert old in GOOD
    found = problems(GOOD.replace(old, new, 1))
    assert len(found) == 1 and found[0].startswith(expected), found


def test_every_problem_of_a_file_is_reported_at_once():
    text = GOOD.replace("port: 8091", "port: 80").replace("rule: manual", "rule: sometimes").replace(
        "    image: shipbot/churn\n", "")
    found = problems(text)

    assert [p.split(":")[0] for p in found] == [
        "line 11, apps[diabetes].environments[dev].target.port", "line 15, apps[diabetes].environments[qa].rule",
        "line 25, apps[churn].image"]


@pytest.mark.parametrize(("text", "expected"), [
    ("apps: [\n", "line 2: not YAML"),
    ("- just a list\n", "line 1: a fleet file is a mapping with `apps:`"),
    ("apps: []\n", "line 1, apps: List should have at least 1 item"),
    ("apps:\n  - name: Bad_Name\n    image: x\n    environments: [{name: a, target: {port: 9000}}]\n",
     "line 2, apps[Bad_Name].name: String should match pattern"),
])
def test_a_file_that_is_not_a_fleet_says_why(text, expected):
    assert problems(text)[0].startswith(expected)


def test_a_missing_target_kind_is_asked_for():
    text = "apps:\n  - name: a\n    image: x\n    environments: [{name: e, target: {port: 9000}, rule: manual}]\n"
    assert problems(text) == ["line 4, apps[a].environments[e].target: a target needs its kind: local or kubernetes"]


def test_a_huge_file_is_refused_before_it_is_read():
    assert problems("#" * (fleet.MAX_BYTES + 1))[0].startswith("the file is larger than")


def test_todays_settings_describe_one_application_staging_then_production():
    settings = Settings(git_repo="/srv/app.git", release_branch="release", repository="shipbot/app",
                        model_name="diabetes", staging_port=8081, production_port=8080)
    only = fleet.single(settings).app()

    assert (only.name, only.source.repository, only.source.branch, only.models, only.image) == (
        "app", "/srv/app.git", "release", ["diabetes"], "shipbot/app")
    staging, production = only.environments
    assert (staging.name, staging.rule, staging.target.port) == ("staging", "on_green", 8081)
    assert (production.name, production.rule, production.schedule, production.target.port) == (
        "production", "schedule", "0 0 2 * * *", 8080)

    on_aks = dataclasses.replace(settings, target="azure", model_name=None,
                                 cloud=Cloud(staging_namespace="stg", production_namespace="prd"))
    only = fleet.single(on_aks).app()
    assert only.models == [] and [env.target.spec for env in only.environments] == [
        "stg/app/model-api@app:80", "prd/app/model-api@app:80"]


@pytest.mark.parametrize(("a", "b", "same"), [
    ("https://github.com/Contoso/App.git", "http://github.com/contoso/app/", True),
    ("https://github.com:443/contoso/app", "https://github.com/contoso/app", True),
    ("https://github.com/contoso/app", "https://github.com/contoso/app2", False),
    ("https://github.example:8443/contoso/app", "https://github.example/contoso/app", False),
    ("file:///srv/git/app.git", "/srv/git/app.git", True),
    ("/srv/git/App.git", "/srv/git/app.git", False),  # paths keep their case
    ("https://dev.azure.com/org/proj/_git/app", "https://dev.azure.com/org/proj/_git/app", True),
    ("https://org.visualstudio.com/proj/_git/app", "https://dev.azure.com/org/proj/_git/app", True),
    ("https://Org.visualstudio.com/DefaultCollection/proj/_git/app", "https://org@dev.azure.com/org/proj/_git/app", True),
    ("https://other.visualstudio.com/proj/_git/app", "https://dev.azure.com/org/proj/_git/app", False),
])
def test_a_repository_is_the_same_however_it_is_written(a, b, same):
    assert fleet.same_repository(a, b) is same
