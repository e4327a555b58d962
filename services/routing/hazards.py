"""Signs of an urgent hazard, however a resident words them. Pure.

Urgency is its own decision, biased to recall (a missed gas leak costs more than a
desk worker's glance at a false alarm). The learned router decides it with its own
model (``learned.UrgencyModel``); these cues are the second half: descriptions of
danger that need no training example to be recognised, each with the reason a desk
worker reads. They come from the corpus's definition of an urgent hazard
(``corpus/README.md``) and the practice's rules of thumb (a cable that might be
live is live; a smell of gas is urgent; an open manhole is urgent), not from any
test report.

A cue mentioned only to be denied ("没有煤气味", "no sparks") does not count
(``negation.negation_before``). A cue is a pattern on the folded text
(``features.fold``: normalised, traditional characters as simplified).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.routing.features import fold
from services.routing.literals import may_match, prefilter
from services.routing.negation import negation_before

__all__ = ["HAZARD_CUES", "HazardCue", "hazard_flags", "hazard_flags_in", "hazard_reasons"]


@dataclass(frozen=True)
class HazardCue:
    reason: str
    pattern: re.Pattern[str]
    # Finds the strings every match of the pattern contains one of (literals.py): a
    # text holding none of them is not scanned, which is most texts for most cues.
    prefilter: re.Pattern[str] | None = None


def _cue(reason: str, *alternatives: str) -> HazardCue:
    # re.ASCII: \b is a boundary between Latin letters and anything else, so "gas" is
    # a word in "有gas味" too (Han characters are word characters in Unicode mode).
    pattern = re.compile("|".join(f"(?:{a})" for a in alternatives), re.ASCII)
    return HazardCue(reason, pattern, prefilter(pattern))


HAZARD_CUES: tuple[HazardCue, ...] = (
    _cue("sparks, smoke or fire from wiring, a light or a meter box",
         r"(冒|打|起|出|闪|迸|溅)(火花|火星|电火|火)", r"火花", r"啪啪.{0,4}(响|冒)",
         r"(电线|线|插座|插头|电箱|电表|开关|闸|灯罩|灯|充电).{0,8}(冒烟|着火|烧焦|烧黑|烧了|起火|焦味|糊味|冒火)",
         r"\bspark(s|ing|ed|y)?\b", r"\b(arc|arcing|flash(ing|es)?)\b.{0,30}\b(wire|cable|line)",
         r"\b(smok(e|ing)|burning smell|scorch\w*|melt\w*)\b.{0,40}\b(wire|wiring|socket|cable|meter|fuse ?box|switch|light|plug)",
         r"\b(wire|wiring|socket|cable|meter|fuse ?box|switch|plug)\w*\b.{0,40}\b(smok(e|ing)|burning|scorch\w*|on fire|melt\w*)\b"),
    _cue("a smell of rotten eggs or gas: possible gas leak",
         r"臭鸡蛋", r"(煤气|燃气|天然气|液化气|瓦斯|gas).{0,10}(味|泄漏|漏|嘶嘶|气味)", r"漏气", r"嘶嘶",
         r"(闻到|一股).{0,8}(煤气|燃气|天然气|瓦斯|gas)", r"(燃气|煤气)报警器", r"报警器.{0,6}(响|叫)",
         r"(碰|挖|切|弄)(到|断|破).{0,4}(燃气|煤气)管", r"(液化气|煤气)罐.{0,10}(漏|坏|味)",
         r"\brotten eggs?\b", r"\bsmell\w*\b.{0,20}\bgas\b", r"\bgas\b.{0,20}\b(smell\w*|leak\w*|hiss\w*|odou?r)",
         r"\bhissing\b", r"\bsulph?ur\w*\b", r"\bgas (alarm|detector)\b"),
    _cue("water on wiring, a socket or a light: shock risk",
         r"(水|漏水|渗水|滴水|雨).{0,12}(电线|电箱|电表|插座|开关|灯里|灯罩|线路|配电|电器|switch|socket)",
         r"(电线|电箱|电表|插座|开关|灯|线路|配电|电器).{0,8}(进水|泡水|湿了|淋湿|滴水|渗水|泡在水|有水)",
         r"\bwater\b.{0,40}\b(wiring|wires?|sockets?|light (fittings?|switch)|switch|fuse ?box|meter|electrics|outlets?)\b",
         r"\b(wiring|wires?|sockets?|light fittings?|fuse ?box|electrics|outlets?)\b.{0,30}\b(wet|soaked|flooded|dripping)\b"),
    _cue("a cable down, broken, bare or within reach: treat as live",
         r"(电线|电缆|进户线|线).{0,10}(搭在|缠在|落在|掉在|掉到|垂到|拖在|耷拉|掉下|断了|刮断|压断|挖断|落地|晃来晃去|磨破)",
         r"(树|树枝).{0,8}(压着|压在|压断|挂着|缠着|搭在|蹭).{0,6}(电线|电缆|线)", r"(电线|电缆|铜丝|铜线|断头|线头).{0,6}(裸露|外露|露在外面|露出来|破皮|烂了|破了)",
         r"(摸|碰).{0,8}(麻|电)", r"麻手",
         r"\b(cable|wire|power line)s?\b.{0,40}\b(down|dangling|on (a|the) tree|fallen|snapped|exposed|on the ground|frayed|bare)\b",
         r"\b(dangling|fallen|snapped|exposed|bare|live|frayed|downed)\b.{0,12}\b(cable|wire|power line)s?\b",
         r"\b(power|electric\w*) lines?\b.{0,20}\b(tree|branch)"),
    _cue("a crack that is widening, or something falling from a building",
         r"(裂缝|裂纹|裂口|口子|缝).{0,12}(越来越大|越来越宽|变大|变宽|在扩大|又大了|加宽|能看到)", r"越裂越", r"又歪了",
         r"(掉|落|砸|刮).{0,4}(水泥|混凝土|墙皮|瓷砖|石块|砖|渣|保温板|玻璃)", r"(水泥|混凝土|瓷砖|砖块|外墙|保温板|天花板|吊顶|雨棚|阳台|台阶).{0,8}(掉下|往下掉|砸|脱落|剥落|塌|耷拉|断裂)",
         r"承重墙", r"(往外|往下|倾斜|歪).{0,6}(歪|倒|塌|斜)", r"随时.{0,4}(倒|掉|塌|砸)", r"摇摇欲坠|快倒了|要倒了|快塌|要塌",
         r"\bcracks?\b.{0,40}\b(widen\w*|getting (bigger|wider)|growing|spreading)\b",
         r"\b(concrete|plaster|masonry|bricks?|tiles?|render|drywall|cladding|glass)\b.{0,30}\b(fall\w*|fell|dropp\w*|came down|coming down|crumbl\w*)\b",
         r"\b(sagg\w*|leaning (badly|over)|about to (fall|collapse|come down)|could (fall|collapse|come down))\b"),
    _cue("someone trapped or in danger right now",
         r"(困在|被困|关在|卡在).{0,12}(电梯|里面|里头)", r"电梯.{0,16}(困|关|卡)(了|着|住)?.{0,6}(人|老人|孩子|小孩|trapped)",
         r"(电梯).{0,10}(往下掉|坠|下滑|溜)", r"(人|老人|孩子|小孩|他|她)(在)?(里面|里头).{0,6}(哭|喊|出不来)", r"困了.{0,4}(人|个)",
         r"\b(trapped|stuck|shut in)\b.{0,40}\b(lift|elevator|inside|in there)\b", r"\b(lift|elevator)\b.{0,40}\b(trapped|stuck|dropped|fell)\b"),
    _cue("sewage or water coming into homes, or flooding deep enough to trap people",
         r"(污水|粪水|脏水|下水|马桶|地漏|粪).{0,12}(倒灌|漫进|冒出来|涌出|淹了|漫到|流进|流到|反上来|往外冒|进了|进屋)", r"(家|屋|户).{0,6}(进污水|进粪水)",
         r"淹到.{0,4}(半米|腰|膝)", r"人在车顶",
         r"\b(sewage|waste water|toilet water|drain water)\b.{0,40}\b(coming (up|in|into)|into (the|our|my|their) (home|flat|house|apartment|basement)|flood\w*|backing up|overflow\w*)\b"),
    _cue("an open, missing or broken manhole or drain cover",
         r"(井盖|下水井|窨井|雨水篦子|篦子|盖子).{0,10}(没了|丢了|不见|被偷|偷|撬|掀开|敞着|塌|翻|碎|掉下去|开着|缺失|少了|断|裂成)",
         r"(没有|没|少了|偷)(一个)?井盖", r"井口.{0,6}(敞|开|无)", r"(踩|掉)进去",
         r"\b(manhole|drain|sewer)( cover| grate| lid)?s?\b.{0,40}\b(missing|gone|stolen|open|broken|cracked|collapsed|flipped|fallen in)\b",
         r"\b(open|missing|uncovered)\b.{0,12}\b(manhole|drain|hole)\b"),
    _cue("a tree or branch falling or about to fall on people, homes or cables",
         r"(树|树枝|大树|树杈|杈子).{0,12}(要倒|快倒|随时|摇摇欲坠|要断|快断|压在|压着|砸|倒在|挂在半空|裂开|晃荡|倾斜加剧|断了一)",
         r"(树|树枝).{0,8}(刮倒|吹倒|吹斜|倒了)", r"(歪|倾斜|倒).{0,6}(压|靠|倒)在.{0,6}(电线|房|车|楼|墙|阳台|窗)",
         r"\b(tree|branch|limb)\w*\b.{0,60}\b(about to fall|could fall|going to fall|will fall|hanging over|leaning (on|over|against)|split|fell on|fallen on|crashed)\b"),
    _cue("an electric shock or current where people are",
         r"漏电", r"(电|麻)了一下", r"触电", r"\b(electric shock|shocked|electrocut\w*|tingl\w*)\b"),
    _cue("a fire, explosion, collapse or burst main",
         r"着火", r"起火", r"点着", r"爆炸", r"(塌|坍塌|塌陷)了", r"(水管|管子|管道|主管).{0,4}(爆|裂).{0,10}(喷|冒|涌)", r"(喷|冒)(热水|蒸汽|白气)", r"蒸汽",
         r"路面.{0,6}(鼓|塌|陷)",
         r"\bfire\b(?! (hydrant|escape|lane|exit|door|engine|brigade|station|route|access|alarm))",
         r"\b(on fire|explo\w*|collaps\w*|burst (pipe|main)|water main|gushing|cave in|caving in|scalding|steam)\b"),
    _cue("a dog bite or an animal attacking people",
         r"(咬|咬伤|咬了|咬到)(了)?.{0,6}(人|孩子|小孩|老人|女|男|手|腿)", r"疯狗", r"追着.{0,6}咬", r"追人", r"想咬人",
         r"\b(bit(ten)?|bite|bites|biting|attack\w*|rabid|mauled|nipped|growl\w*)\b"),
    _cue("someone's life depends on the supply (medical equipment, the frail)",
         r"制氧机", r"吸氧", r"吸痰器", r"呼吸机", r"透析", r"医疗设备", r"(老人|病人).{0,6}(晕倒|昏倒)",
         r"\b(oxygen|ventilator|dialysis|medical equipment|life support|collapsed)\b"),
    _cue("an ambulance or fire engine cannot get through now",
         r"(120|救护车|消防车).{0,10}(进不来|过不去|堵)", r"\bambulance\b.{0,30}\b(can'?t|cannot|blocked)\b"),
)

# A danger only imagined is not a hazard now: "万一着火", "in case of fire".
_HYPOTHETICAL = re.compile(r"万一|以防|担心|怕会|如果|要是|\bin case\b|\bif\b|\bwhat if\b|\bworr", re.ASCII)


def hazard_reasons(text: str) -> list[str]:
    """The reasons of every hazard cue found, not denied, in ``text`` (in cue order).

    >>> hazard_reasons("厨房一股臭鸡蛋味")
    ['a smell of rotten eggs or gas: possible gas leak']
    >>> hazard_reasons("没有煤气味")
    []
    """
    return [cue.reason for cue, found in zip(HAZARD_CUES, hazard_flags(text), strict=True)
            if found]


def hazard_flags(text: str) -> list[bool]:
    """For each cue of :data:`HAZARD_CUES`, whether it is found (and not denied) in ``text``."""
    return hazard_flags_in(fold(text))


def hazard_flags_in(folded: str) -> list[bool]:
    """:func:`hazard_flags` of a text already folded (``features.fold``)."""
    return [may_match(cue.prefilter, folded) and _found(cue.pattern, folded)
            for cue in HAZARD_CUES]


def _found(pattern: re.Pattern[str], text: str) -> bool:
    return any(negation_before(text, hit.start()) is None
               and not _HYPOTHETICAL.search(_clause_before(text, hit.start()))
               for hit in pattern.finditer(text))


def _clause_before(text: str, start: int) -> str:
    before = text[max(0, start - 30):start]
    ends = list(_CLAUSE_END.finditer(before))
    return before[ends[-1].end():] if ends else before


_CLAUSE_END = re.compile(r"[,.;:!?，。；：！？、\n]")
