"""list and aggregatedList through the client: paging, filters and scopes."""

from __future__ import annotations

from emulator_helpers import REGION, ZONE, Emulator, group_resource, insert_template
from google.cloud import compute_v1


def test_template_lists_page_filter_and_aggregate(
    emulator: Emulator, project: str, artifacts: dict[str, str]
) -> None:
    for name in ("web-1", "web-2", "worker-1"):
        insert_template(emulator, project, name, artifacts["hello"], "1.0.0")
    templates = emulator.client(compute_v1.InstanceTemplatesClient)

    paged = templates.list(request=compute_v1.ListInstanceTemplatesRequest(project=project, max_results=2))
    assert sorted(t.name for t in paged) == ["web-1", "web-2", "worker-1"]
    fresh = templates.list(request=compute_v1.ListInstanceTemplatesRequest(project=project, max_results=2))
    first_page = next(iter(fresh.pages))
    assert len(first_page.items) == 2 and first_page.next_page_token

    filtered = templates.list(
        request=compute_v1.ListInstanceTemplatesRequest(project=project, filter='name = "web-*"')
    )
    assert sorted(t.name for t in filtered) == ["web-1", "web-2"]
    regex = templates.list(
        request=compute_v1.ListInstanceTemplatesRequest(project=project, filter="name ne web-.*")
    )
    assert [t.name for t in regex] == ["worker-1"]

    scopes = {
        scope: [t.name for t in scoped.instance_templates]
        for scope, scoped in templates.aggregated_list(project=project)
    }
    assert sorted(scopes["global"]) == ["web-1", "web-2", "worker-1"]


def test_group_aggregated_list_holds_zonal_and_regional_groups(
    emulator: Emulator, project: str, health_check: str, artifacts: dict[str, str]
) -> None:
    insert_template(emulator, project, "t", artifacts["hello"], "1.0.0")
    zonal = emulator.client(compute_v1.InstanceGroupManagersClient)
    regional = emulator.client(compute_v1.RegionInstanceGroupManagersClient)
    zonal.insert(
        project=project,
        zone=ZONE,
        instance_group_manager_resource=group_resource(project, "z", "t", 0, health_check),
    ).result(timeout=30)
    regional.insert(
        project=project,
        region=REGION,
        instance_group_manager_resource=group_resource(project, "r", "t", 0, health_check),
    ).result(timeout=30)

    scopes = {
        scope: [g.name for g in scoped.instance_group_managers]
        for scope, scoped in zonal.aggregated_list(project=project)
        if scoped.instance_group_managers
    }
    assert scopes == {f"zones/{ZONE}": ["z"], f"regions/{REGION}": ["r"]}
    assert [g.name for g in regional.list(project=project, region=REGION)] == ["r"]
    assert [g.name for g in zonal.list(project=project, zone=ZONE)] == ["z"]
    assert [h.name for h in emulator.client(compute_v1.HealthChecksClient).list(project=project)] == ["hc"]


def test_a_base_instance_name_ending_in_hashes_numbers_the_instances(
    emulator: Emulator, project: str, artifacts: dict[str, str]
) -> None:
    insert_template(emulator, project, "t", artifacts["hello"], "1.0.0")
    groups = emulator.client(compute_v1.InstanceGroupManagersClient)
    resource = compute_v1.InstanceGroupManager(
        name="numbered",
        base_instance_name="web-##",
        instance_template=f"projects/{project}/global/instanceTemplates/t",
        target_size=2,
    )
    groups.insert(project=project, zone=ZONE, instance_group_manager_resource=resource).result(timeout=30)
    names = sorted(
        m.name
        for m in groups.list_managed_instances(project=project, zone=ZONE, instance_group_manager="numbered")
    )
    assert names == ["web-01", "web-02"]
    groups.delete(project=project, zone=ZONE, instance_group_manager="numbered").result(timeout=60)
