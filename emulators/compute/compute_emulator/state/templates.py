"""Instance templates: what an insert may carry, and when a delete must wait."""

from __future__ import annotations

import copy
from typing import Any

from ..clock import new_id, rfc3339_now
from ..errors import already_exists, in_use, not_found, required
from ..links import check_name
from ..operations import Operation
from .registry import OUTPUT_ONLY, Registry, refuse

# Fields that exist in the API but that the emulator cannot honour: refused rather than silently
# ignored, because ignoring them would change what the caller gets.
REFUSED_TEMPLATE_FIELDS = ("sourceInstance", "sourceInstanceParams")


class InstanceTemplates(Registry):
    """instanceTemplates.insert/delete."""

    def insert_template(self, project: str, body: dict[str, Any], request_id: str | None) -> Operation:
        name = check_name(body.get("name"))
        path = f"projects/{project}/global/instanceTemplates/{name}"
        if path in self.templates:
            raise already_exists(path)
        refuse(body, REFUSED_TEMPLATE_FIELDS, "an instance template")
        if "properties" not in body:
            raise required("resource.properties")
        resource = {k: copy.deepcopy(v) for k, v in body.items() if k not in OUTPUT_ONLY}
        resource.update({"id": new_id(), "creationTimestamp": rfc3339_now()})
        self.templates[path] = resource

        async def work() -> None:
            return None

        return self._operation(project, "global", "insert", path, resource["id"], work, request_id)

    def delete_template(self, project: str, name: str, request_id: str | None) -> Operation:
        path = f"projects/{project}/global/instanceTemplates/{name}"
        resource = self.templates.get(path)
        if resource is None:
            raise not_found(path)

        async def work() -> None:
            for group in self.groups.values():
                if group.template_path == path:
                    raise in_use(path, group.path)
            self.templates.pop(path, None)

        return self._operation(project, "global", "delete", path, resource["id"], work, request_id)
