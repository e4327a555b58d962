"""The Open311 service list, worked out from the routing rules. Pure: no I/O.

One service per routing category (``service_code`` = the category slug), and one more,
``not_sure``, with no category: routing's keywords decide from the description, as
they do for a desk report without a category. Every service asks for the community
(required unless the deployment names a default one); a category whose agencies
include a housing-sector one (property manager, housing administration) works inside
a building, so it needs the building; every other one takes the grid (网格) if known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.routing.rules import RuleSet, format_duration
from shared.contracts import Language, Sector

NOT_SURE = "not_sure"

_CJK = re.compile(r"[\u3400-\u9fff]")


@dataclass(frozen=True)
class Attribute:
    """One field of a service definition (GeoReport v2 ``attribute``)."""

    code: str
    required: bool
    order: int
    description: str
    description_en: str
    datatype: str = "string"

    def view(self, lang: Language) -> dict:
        return {
            "variable": True,
            "code": self.code,
            "datatype": self.datatype,
            "required": self.required,
            "datatype_description": None,
            "order": self.order,
            "description": self.description_en if lang is Language.en else self.description,
        }


@dataclass(frozen=True)
class Service:
    code: str
    name: str
    name_en: str
    group: str
    keywords: tuple[str, ...]
    description: str
    description_en: str
    attributes: tuple[Attribute, ...]
    category: str | None  # None: the "not sure" service

    def view(self, lang: Language) -> dict:
        en = lang is Language.en
        words = [k for k in self.keywords if bool(_CJK.search(k)) is not en]
        return {
            "service_code": self.code,
            "service_name": self.name_en if en else self.name,
            "description": self.description_en if en else self.description,
            "metadata": bool(self.attributes),
            "type": "realtime",
            "keywords": ", ".join(words),
            "group": self.group,
        }

    def definition(self, lang: Language) -> dict:
        return {"service_code": self.code,
                "attributes": [a.view(lang) for a in sorted(self.attributes,
                                                            key=lambda a: a.order)]}

    def attribute(self, code: str) -> Attribute | None:
        return next((a for a in self.attributes if a.code == code), None)

    def notice(self, issue_id: str, lang: Language) -> str:
        """A POST's ``service_notice``: received, and what happens next. A category's
        description says who leads and how soon; not_sure's is advice for choosing it,
        so its notice says the desk routes the report instead."""
        en = lang is Language.en
        if self.category is None:
            following = _NOT_SURE_NEXT_EN if en else _NOT_SURE_NEXT
        else:
            following = self.description_en if en else self.description
        return f"Received as {issue_id}. {following}" if en else f"已受理，编号 {issue_id}。{following}"


_NOT_SURE_NEXT = "社区将根据描述派给相关单位办理"
_NOT_SURE_NEXT_EN = "The community desk routes it to the agencies responsible, from its description"


def _community(default: str | None) -> Attribute:
    hint = f"；不填则为 {default}" if default else ""
    hint_en = f"; {default} when left empty" if default else ""
    return Attribute("community", required=not default, order=1,
                     description=f"问题所在的社区（如 缤泰社区）{hint}",
                     description_en=f"The community (社区) the problem is in{hint_en}")


BUILDING = Attribute("building", required=True, order=2,
                     description="楼号、单元、门牌（如 丽德花园3号楼2单元501）",
                     description_en="Building, entrance and flat (e.g. 丽德花园3号楼2单元501)")
GRID = Attribute("grid", required=False, order=3,
                 description="网格编号（如 3-1），知道就填",
                 description_en="The grid (网格) number, e.g. 3-1, if known")


_ZH_UNITS = str.maketrans({"d": "天", "h": "小时", "m": "分钟", "s": "秒"})


def _zh(duration: str) -> str:
    """``1d12h`` -> ``1天12小时``."""
    return duration.translate(_ZH_UNITS)


def build_catalog(rules: RuleSet, default_community: str | None) -> dict[str, Service]:
    """Every service, by code, in the rules' order, then ``not_sure``."""
    community = _community(default_community)
    services: dict[str, Service] = {}
    for rule in rules.rules:
        lead = rules.agency(rule.lead)
        agencies = [lead, *(rules.agency(a) for a in rule.support)]
        in_building = any(a.sector is Sector.housing for a in agencies)
        window = rules.window(rule.priority)
        ack, fix = format_duration(window.acknowledge), format_duration(window.resolve)
        services[rule.category] = Service(
            code=rule.category, name=rule.name, name_en=rule.name_en,
            group=lead.sector.value, keywords=tuple(rule.keywords),
            description=(f"{rule.name}：{lead.name}牵头办理，{_zh(ack)}内响应，"
                         f"{_zh(fix)}内办结"),
            description_en=(f"{rule.name_en}: {lead.name_en} leads; acknowledged within "
                            f"{ack}, resolved within {fix}"),
            attributes=(community, BUILDING, GRID) if in_building else (community, GRID),
            category=rule.category,
        )
    if NOT_SURE in services:
        raise ValueError(f"a routing category may not be called {NOT_SURE!r}")
    services[NOT_SURE] = Service(
        code=NOT_SURE, name="不确定（社区根据描述派单）",
        name_en="Not sure (the desk routes it from the description)",
        group=Sector.other.value, keywords=(),
        description="不知道该找哪个部门时选这一项：社区根据描述派给相关单位",
        description_en="Choose this when unsure which agency is responsible: the "
                       "community desk routes it from the description",
        attributes=(community, GRID,
                    Attribute("building", required=False, order=2,
                              description=BUILDING.description,
                              description_en=BUILDING.description_en)),
        category=None,
    )
    return services


def service_code_of(category: str | None, catalog: dict[str, Service]) -> str:
    """The service an issue of this category shows under: routing's fallback
    category (``general``) and no category at all are ``not_sure``."""
    if category and category in catalog and catalog[category].category is not None:
        return category
    return NOT_SURE
