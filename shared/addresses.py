"""The public form of a report's address: the building, never the home in it.

A desk address says where the resident lives (``丽德花园3号楼2单元501``, ``Flat 5, 12
Rose Court``). Open311's reads are public, and FixMyStreet shows them on a map: they
should say where the problem is, not whose door it is. :func:`public_address` keeps
the estate, the road and the building and drops what is inside the building: the
entrance or unit (单元, 门), the floor and the flat or room. The desk and the agencies
that go there keep the whole address. Pure: no I/O.

    >>> public_address("丽德花园3号楼2单元501")
    '丽德花园3号楼'
    >>> public_address("Flat 5, 12 Rose Court")
    '12 Rose Court'
    >>> public_address("朝阳路12号")
    '朝阳路12号'
"""

from __future__ import annotations

import re

_D = "0-9０-９"
_CN_NUM = "零〇一二三四五六七八九十两"
_NUMBER = f"(?:[{_D}]+|[{_CN_NUM}]+)"
# Between the parts of a Chinese address: nothing, a space, a comma, a dash, a dot.
_SEP = "[\\s,，、.．·\\-－—_/]*"

# The entrance (单元; in Beijing also 门 or 楼门, in Guangdong 梯), always private.
# "2门" only when a number follows, so an estate's "3号门" (its gate) is kept.
_UNIT = (f"(?:{_NUMBER}(?:单元|單元|楼门|樓門|梯)"
         f"|[{_D}]+[门門](?={_SEP}[{_D}]))")
# A floor: "12层", "12楼" (after the building; "5号楼" is the building), "12F".
_FLOOR = f"(?:{_NUMBER}(?:层|層|(?<![号號])[楼樓])|[{_D}]+[Ff](?![A-Za-z]))"
# A flat or room with its mark: "501室", "A室", "501号房", "501户"; Taiwan's "12樓之3".
_ROOM_ID = f"(?:[{_D}]+[A-Za-z]?|(?<![A-Za-z])[A-Za-z])"
_ROOM_MARK = "(?:室|号房|號房|房间|房間)"
_HOUSEHOLD_MARK = "(?:户|戶)"
_MARKED_ROOM = f"(?:{_ROOM_ID}(?:{_ROOM_MARK}|{_HOUSEHOLD_MARK})|之[{_D}{_CN_NUM}]+)"
# After the building or the unit, a bare number is the flat: "3号楼501", "B座1203",
# "2单元501号"; not the next building ("5号院3号楼").
_BARE_ROOM = (f"(?:[{_D}]+[A-Za-z]?(?:[号號房](?![楼樓院])"
              f"|(?![{_D}号號栋棟幢座楼樓院])))")
_PRIVATE = f"(?:{_UNIT}|{_FLOOR}|{_MARKED_ROOM}|{_BARE_ROOM})"
_PRIVATE_RUN = f"(?:{_SEP}{_PRIVATE})+"

# The building: "3号楼", "3栋", "3幢", "B座", "3號樓", "3棟"; or a road number
# "12号" / "7號", after which any floor or room is inside that building.
_BLOCK = f"(?:[{_D}A-Za-z]+(?:号楼|號樓|号院|號院)|[{_D}A-Za-z{_CN_NUM}]+(?:栋|棟|幢|座))"
_BUILDING = f"(?:{_BLOCK}|[{_D}]+[号號](?![楼樓院]))"
_AFTER_BUILDING = re.compile(f"(?P<keep>{_BUILDING})(?P<private>{_PRIVATE_RUN})")
# Anywhere: an entrance or a marked room, and whatever private parts follow it.
_ANYWHERE = re.compile(f"(?P<keep>){_SEP}(?:{_UNIT}|{_MARKED_ROOM})(?:{_PRIVATE_RUN})?")
# "丽德花园3-2-501" (building 3, unit 2, flat 501) and "丽德花园3-501": the first number
# is the building. Only after Chinese text, so "12-14 High Street" is left alone, and
# not before 号 ("朝阳路12-3号" is a road number).
_DASHED = re.compile(f"(?<=[\u4e00-\u9fff])(?P<keep>[{_D}]+[A-Za-z]?)"
                     f"(?:[\\-－—][{_D}]+[A-Za-z]?){{1,2}}(?![{_D}号號\\-－—])")

_EN_NUMBER_ID = r"\d+[A-Za-z]?(?:/\d+)?"
_EN_ID = rf"(?:{_EN_NUMBER_ID}|[A-Za-z]\d{{0,4}}(?:/\d+)?)\b"
_EN_BUILDING_WORD = r"(?:Building|Bldg\.?|Block|Blk\.?|Tower|House|Court|Entrance)"
# The word before a flat's, a room's or an entrance's number, with its "No." or "#".
_EN_FLAT_WORD = (r"\b(?:Flat|Apartment|Apt|Unit|Suite|Ste|Room|Rm|Entrance|Staircase|Stair)"
                 r"(?![a-z])\.?\s*(?:No\.?\s*)?#?\s*")
# A flat, a room, an entrance or a floor in English; "#5" unless it numbers a building
# or a road ("Building #5", "Route #5").
_EN_PRIVATE = re.compile(
    rf"(?:{_EN_FLAT_WORD}{_EN_ID}"
    rf"|\b(?:Floor|Level)\s*\d+\b|\b\d+(?:st|nd|rd|th)\s+Floor\b|\b(?:\d+|G)/F\b"
    rf"|(?<![\w#])(?P<hash>#)\s*{_EN_ID})",
    re.IGNORECASE)
_EN_NUMBERED_HERE = re.compile(rf"\b(?:{_EN_BUILDING_WORD}|Route|Road|Rd\.?|Highway|Hwy\.?)\s*$",
                               re.IGNORECASE)
# "No. 501" right after a building ("Building 3, No. 501") is the flat; elsewhere ("No.
# 12 Chaoyang Road") it is a road number.
_EN_NO_AFTER_BUILDING = re.compile(
    rf"(\b{_EN_BUILDING_WORD}\s*#?\s*[A-Za-z0-9]+)[\s,，]+No\.?\s*\d+[A-Za-z]?\b",
    re.IGNORECASE)
_SPACES = re.compile(r"[ \t]{2,}")

# ------------------------------------------------------------- flats in free text
# A description says where as residents say it ("我家3号楼201漏水", "楼上402天天漏水",
# "Flat 5 has no heating"). Free text is full of numbers that are not flats, so a number
# is masked only when a flat's mark ties it to one, and only the flat goes: the building
# stays, as in public_address, and so does the rest of the sentence.
FLAT_MASK = "***"
# A place in or at a building that 楼 starts ("501楼道": the stairwell by flat 501).
_BUILDING_PLACE = "[道梯门門口上下顶頂]"
# What follows a number that counts or measures ("3号楼2026年", "楼下200米", "100多户",
# "12月"), or a date's or a decimal's tail ("2026-12", "100.5"); "402天天" (every day)
# is a flat.
_COUNTED = (f"(?:[年月日号號个個次人元块塊米度点點分秒岁歲多余餘层層栋棟幢座院路条條辆輛"
            f"斤吨噸时時周週届屆份位名台部件张張本万萬千百亿億倍%％平㎡]|天(?!天)|公里"
            f"|[楼樓](?!{_BUILDING_PLACE})"
            f"|[\\-－/.．:：][{_D}]{{1,2}}(?![{_D}]))")
# A bare flat number: three or four digits (a shorter one is a count or a floor, a
# longer one a date or a phone), never one of a masked phone ("138****5678").
_FLAT_NUMBER = (f"[{_D}]{{3,4}}[A-Za-z]?(?:[号號房](?![楼樓院])"
                f"|(?![{_D}A-Za-z*＊]|{_COUNTED}))")
# A marked room, but not a layout ("3室2厅": three bedrooms) and not a count of
# households ("20户"): a household's 户 marks a flat only after a building or a unit.
_TEXT_ROOM = f"{_ROOM_ID}{_ROOM_MARK}(?!{_SEP}[{_D}{_CN_NUM}]+[厅廳])"
# An entrance, not "3楼门口" (the door on the third floor).
_TEXT_UNIT = f"{_UNIT}(?!口)"
_TEXT_FLOOR = f"{_FLOOR}(?!{_BUILDING_PLACE})"
_TEXT_PRIVATE = (f"(?:{_TEXT_UNIT}|{_TEXT_FLOOR}|{_ROOM_ID}{_HOUSEHOLD_MARK}|{_TEXT_ROOM}"
                 f"|{_FLAT_NUMBER})")
# A run with an entrance or a flat in it; floors alone ("3号楼12层") are not a home.
_TEXT_FLAT_RUN = (f"(?:{_SEP}{_TEXT_FLOOR})*{_SEP}(?:{_TEXT_UNIT}|{_ROOM_ID}{_HOUSEHOLD_MARK}"
                  f"|{_TEXT_ROOM}|{_FLAT_NUMBER})(?:{_SEP}{_TEXT_PRIVATE})*")
# Whose flat a bare number is: a neighbour's ("楼上402") or the resident's own ("我家201",
# "住在1502"). Two characters at least: a lone 住 or 家 starts too much else.
_NEIGHBOUR = "(?:楼上|楼下|樓上|樓下|隔壁|对门|對門|对面|對面)的?"
_HOME = "(?:我家|我们家|我們家|咱家|俺家|自家|家住|住在|我住)"
_FLATS_IN_TEXT = re.compile(
    # "3号楼2单元501", "B座1203室": after a building (not a road's 号: "朝阳路12号").
    f"(?P<building>{_BLOCK}){_TEXT_FLAT_RUN}"
    # "楼上402", "隔壁1203室", "我家201": a neighbour's flat, or the resident's own.
    f"|(?P<neighbour>{_NEIGHBOUR}|{_HOME})(?:{_TEXT_ROOM}|{_FLAT_NUMBER})"
    # "2单元501室", "501室": an entrance or a marked room anywhere.
    f"|(?:{_TEXT_UNIT}|{_TEXT_ROOM})(?:{_SEP}{_TEXT_PRIVATE})*")
_EN_FLAT_IN_TEXT = re.compile(
    rf"(?P<word>{_EN_FLAT_WORD})(?:{_EN_NUMBER_ID}|[A-Za-z]\d{{1,4}})\b(?![*＊])",
    re.IGNORECASE)


def public_address(address: str) -> str:
    """``address`` without its entrance, floor and flat: what anyone may be shown.

    ``丽德花园3号楼2单元501`` -> ``丽德花园3号楼``; ``B座1203室`` -> ``B座``;
    ``Flat 5, 12 Rose Court`` -> ``12 Rose Court``; ``123 Main St Apt 4B`` ->
    ``123 Main St``. A road number (``朝阳路12号``), a building (``和平里5号楼``) and a
    street address with no flat are returned unchanged. An address that was nothing but
    a flat ("501室") becomes empty: there is no building to show.
    """
    text = _EN_NO_AFTER_BUILDING.sub(r"\1", _chinese_building(address))
    pieces = re.split(r"(\s*[,，]\s*)", text)  # parts, with the separators between
    kept: list[str] = []
    for at in range(0, len(pieces), 2):
        part = _english_building(pieces[at])
        if part:
            kept += [pieces[at - 1], part] if kept else [part]
    return "".join(kept).strip(" ,，-－—")


def _chinese_building(text: str) -> str:
    for pattern in (_AFTER_BUILDING, _ANYWHERE, _DASHED):
        text = pattern.sub(lambda m: m.group("keep"), text)
    return text


def _english_building(part: str) -> str:
    def drop(match: re.Match[str]) -> str:
        if match.group("hash") and _EN_NUMBERED_HERE.search(part[:match.start()]):
            return match.group(0)
        return " "
    kept, dropped = _EN_PRIVATE.subn(drop, part)
    return _SPACES.sub(" ", kept).strip() if dropped else part


def mask_flats(text: str) -> str:
    """``text`` with every flat it names masked and the building kept: free text
    (a description) shown to anyone.

    ``我家3号楼201漏水`` -> ``我家3号楼***漏水``; ``楼上402天天漏水`` ->
    ``楼上***天天漏水``; ``2单元501室门口`` -> ``***门口``; ``Flat 5 has no heating`` ->
    ``Flat *** has no heating``. Numbers without a flat's mark are left as written: a
    building (``3号楼``), a floor (``12层``), a road number (``朝阳路12号``), a time, a
    date, money, a count, an issue id or a masked phone.
    """
    def keep_building(match: re.Match[str]) -> str:
        return (match.group("building") or match.group("neighbour") or "") + FLAT_MASK
    text = _FLATS_IN_TEXT.sub(keep_building, text)
    return _EN_FLAT_IN_TEXT.sub(lambda m: m.group("word") + FLAT_MASK, text)
