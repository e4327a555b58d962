"""The public form of an address (shared.addresses): the building, never the flat."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.addresses import mask_flats, public_address
from shared.privacy import scrub_text


@pytest.mark.parametrize("address, public", [
    # The desk's usual form: estate, building, entrance (单元), flat.
    ("丽德花园3号楼2单元501", "丽德花园3号楼"),
    ("丽德花园3号楼2单元501室", "丽德花园3号楼"),
    ("丽德花园3号楼二单元501", "丽德花园3号楼"),
    ("丽德花园3号楼2单元501号", "丽德花园3号楼"),
    ("丽德花园 3号楼2单元501", "丽德花园 3号楼"),  # Open311: address_string + building
    ("丽德花园3号楼 2单元 501", "丽德花园3号楼"),
    ("丽德花园3号楼，2单元501", "丽德花园3号楼"),
    # The flat alone, marked or bare, or after a dash.
    ("丽德花园3号楼501室", "丽德花园3号楼"),
    ("丽德花园3号楼501号房", "丽德花园3号楼"),
    ("丽德花园3号楼501房间", "丽德花园3号楼"),
    ("丽德花园3号楼501", "丽德花园3号楼"),
    ("丽德花园3号楼-501", "丽德花园3号楼"),
    ("丽德花园3号楼2-501", "丽德花园3号楼"),
    # Towers (座), blocks (栋, 幢), floors.
    ("丽德花园B座1203", "丽德花园B座"),
    ("丽德花园B座1203室", "丽德花园B座"),
    ("丽德花园A座12层1203", "丽德花园A座"),
    ("A座12F-1203", "A座"),
    ("丽德花园3栋1203室", "丽德花园3栋"),
    ("丽德花园三栋二单元502", "丽德花园三栋"),
    ("丽德花园3幢2单元301", "丽德花园3幢"),
    # Beijing's 门 for the entrance; a courtyard (院) before the building.
    ("和平里5号楼2门501", "和平里5号楼"),
    ("和平里5号院3号楼2单元501", "和平里5号院3号楼"),
    ("和平里5号院501", "和平里5号院"),
    # 楼-单元-室 written with dashes: the first number is the building.
    ("丽德花园3-2-501", "丽德花园3"),
    ("丽德花园3-501", "丽德花园3"),
    ("丽德花园3-2-501室", "丽德花园3"),
    # A road number, then a flat in that building.
    ("朝阳路12号501室", "朝阳路12号"),
    ("朝阳路12号501", "朝阳路12号"),
    ("朝阳路12号3楼", "朝阳路12号"),
    # Full-width digits, typed in full-width mode.
    ("丽德花园３号楼２单元５０１", "丽德花园３号楼"),
    ("丽德花园3号楼１２０３室", "丽德花园3号楼"),
    # Traditional characters: Hong Kong, Taiwan.
    ("麗德花園3號樓2單元501室", "麗德花園3號樓"),
    ("麗德花園3棟1203室", "麗德花園3棟"),
    ("台北市信義路五段7號12樓之3", "台北市信義路五段7號"),
    ("九龍彌敦道100號12樓A室", "九龍彌敦道100號"),
    # English: the flat first or last, with or without commas.
    ("Flat 5, 12 Rose Court", "12 Rose Court"),
    ("Flat 5, Rose Court, 12 High Street", "Rose Court, 12 High Street"),
    ("Flat 2/1, 30 Byres Road", "30 Byres Road"),
    ("Lide Garden Bldg 5, Flat 301", "Lide Garden Bldg 5"),
    ("123 Main St Apt 4B", "123 Main St"),
    ("123 Main St Apt. 4B", "123 Main St"),
    ("123 Main St #5", "123 Main St"),
    ("123 Main St, Unit 12, Springfield", "123 Main St, Springfield"),
    ("Unit 3B, 45 King St", "45 King St"),
    ("apt. 7, 22 Elm Road", "22 Elm Road"),
    ("Apartment 12, 8 Park Lane", "8 Park Lane"),
    ("Room 4, Building 2, Lide Garden", "Building 2, Lide Garden"),
    ("Suite 200, 1 Market Street", "1 Market Street"),
    ("12 Rose Court, 3rd Floor, Flat 9", "12 Rose Court"),
    ("Flat A, 12/F, Block 3, Lide Garden", "Block 3, Lide Garden"),
    ("Building 3, Entrance 2, Flat 501", "Building 3"),
    # "No. 501" after a building is the flat.
    ("Building 3, No. 501", "Building 3"),
    ("Lide Garden Block 3 No. 501", "Lide Garden Block 3"),
    # Mixed Chinese and English, as residents write them.
    ("丽德花园3号楼 Flat 501", "丽德花园3号楼"),
    ("Lide Garden 3号楼2单元501", "Lide Garden 3号楼"),
    ("丽德花园 Building 3 Room 501", "丽德花园 Building 3"),
    ("Flat 5, 丽德花园3号楼", "丽德花园3号楼"),
])
def test_the_public_address_stops_at_the_building(address, public):
    assert public_address(address) == public


@pytest.mark.parametrize("address", [
    "和平里5号楼",
    "朝阳路12号",
    "朝阳路12-3号",
    "丽德花园",
    "丽德花园3号楼南侧",
    "丽德花园3号楼楼道",
    "丽德花园南门",
    "丽德花园3号门",  # the estate's gate, not an entrance of a building
    "丽德花园北门外50米",
    "北京市朝阳区，丽德花园3号楼",
    "10 Downing Street",
    "12-14 High Street",
    "No. 12 Chaoyang Road",
    "Building #5",
    "Route #5",
    "Flat Iron Building",
    "United Court",
    "Flatbush Avenue 12",
    "Roomy House",
    "Unity House, 3 Station Road",
    "39.380000, 117.040000",  # coordinates standing for the address
    "address_id A-77",
    "",
])
def test_an_address_without_a_flat_is_left_as_written(address):
    assert public_address(address) == address


def test_the_entrance_alone_is_dropped_too_and_what_follows_it_kept():
    assert public_address("丽德花园3号楼2单元楼道") == "丽德花园3号楼楼道"
    assert public_address("丽德花园3号楼2单元") == "丽德花园3号楼"
    assert public_address("12 Rose Court, Entrance B") == "12 Rose Court"


def test_an_address_that_is_only_a_flat_has_nothing_public():
    assert public_address("501室") == ""
    assert public_address("Flat 5") == ""


def test_a_masked_phone_loses_what_was_left_of_it_not_its_mask():
    # request_view scrubs first: a phone is masked whole before any digits are cut.
    assert "1234" not in public_address(scrub_text("丽德花园3号楼 Unit 138 1234 5678"))


@given(building=st.integers(1, 40), unit=st.integers(1, 8), floor=st.integers(1, 33),
       room=st.integers(1, 8), mark=st.sampled_from(["", "室", "号", "号房"]),
       estate=st.sampled_from(["丽德花园", "和平里", "幸福里小区", "Lide Garden "]))
def test_no_flat_number_survives_in_any_usual_spelling(building, unit, floor, room, mark,
                                                        estate):
    flat = f"{floor}{room:02d}"
    for address, public in (
            (f"{estate}{building}号楼{unit}单元{flat}{mark}", f"{estate}{building}号楼"),
            (f"{estate}{building}栋{flat}{mark}", f"{estate}{building}栋"),
            (f"{estate}{building}号楼-{flat}", f"{estate}{building}号楼")):
        assert public_address(address) == public, address


# ------------------------------------------------------------- flats in free text

@pytest.mark.parametrize("text, public", [
    # After a building: the flat, the entrance, a floor with a flat.
    ("我家3号楼201漏水", "我家3号楼***漏水"),
    ("丽德花园3号楼2单元501室的水管爆了", "丽德花园3号楼***的水管爆了"),
    ("3号楼2单元501，天花板滴水", "3号楼***，天花板滴水"),
    ("3号楼 2单元 501 漏水", "3号楼*** 漏水"),
    ("3号楼501号房没有暖气", "3号楼***没有暖气"),
    ("住3号楼-501", "住3号楼***"),
    ("B座1203的水管", "B座***的水管"),
    ("A座12层1203一直有噪音", "A座***一直有噪音"),
    ("三栋二单元502停电", "三栋***停电"),
    ("和平里5号楼2门501楼道灯坏了", "和平里5号楼***楼道灯坏了"),
    ("3号楼1203、1204都漏水", "3号楼***都漏水"),
    ("3号楼501户门口有垃圾", "3号楼***门口有垃圾"),
    ("3号楼2单元楼道灯坏了", "3号楼***楼道灯坏了"),
    # A neighbour's flat: 楼上, 楼下, 隔壁, 对门 and a three- or four-digit number.
    ("楼上402天天漏水", "楼上***天天漏水"),
    ("楼下1203室装修太吵", "楼下***装修太吵"),
    ("隔壁的1502养狗", "隔壁的***养狗"),
    ("对门1202号堆杂物", "对门***堆杂物"),
    # The resident's own flat, with no building: 我家, 住在, 家住 and a number.
    ("我家201漏水", "我家***漏水"),
    ("我们家1502的暖气不热", "我们家***的暖气不热"),
    ("住在402，天天漏水", "住在***，天天漏水"),
    ("我住1203室", "我住***"),
    ("家住1502", "家住***"),
    # An entrance or a marked room anywhere.
    ("2单元501室漏水", "***漏水"),
    ("二单元门口有积水", "***门口有积水"),
    ("501室的暖气不热", "***的暖气不热"),
    ("A室的窗户坏了", "***的窗户坏了"),
    # Traditional characters, full-width digits.
    ("麗德花園3號樓2單元501室漏水", "麗德花園3號樓***漏水"),
    ("樓上402天天漏水", "樓上***天天漏水"),
    ("對門1202室", "對門***"),
    ("3棟1203室冇熱水", "3棟***冇熱水"),
    ("我家３号楼２０１漏水", "我家３号楼***漏水"),
    # English: the word stays, the number goes.
    ("Flat 5 has no heating", "Flat *** has no heating"),
    ("water from the flat above (Apt 3B)", "water from the flat above (Apt ***)"),
    ("Apartment 12 and apt. 14 both flooded", "Apartment *** and apt. *** both flooded"),
    ("Unit 2/1 is cold", "Unit *** is cold"),
    ("Room B12 window broken", "Room *** window broken"),
    ("Flat No. 7, 12 Rose Court", "Flat No. ***, 12 Rose Court"),
    # Mixed, as residents write them.
    ("丽德花园3号楼 Flat 501 漏水", "丽德花园3号楼 Flat *** 漏水"),
    ("Lide Garden 3号楼2单元501 leaking", "Lide Garden 3号楼*** leaking"),
    ("Water from 楼上402 since Monday", "Water from 楼上*** since Monday"),
])
def test_a_flat_in_free_text_is_masked_and_its_building_kept(text, public):
    assert mask_flats(text) == public


@pytest.mark.parametrize("text", [
    # Buildings, floors, road numbers, gates.
    "3号楼门口的路灯不亮",
    "3号楼12层走廊灯坏了",
    "3楼门口堆了垃圾",
    "12层的电梯坏了",
    "朝阳路12号门口",
    "朝阳路12-3号对面",
    "丽德花园3号门",
    "和平里5号楼和7号楼之间",
    # Counts, ages, money, times, dates, distances.
    "3号楼3天没水了",
    "3号楼2个单元都停电",
    "3号楼100多户没有暖气",
    "3号楼2026年建的",
    "小区有120户",
    "楼下200米有个坑",
    "隔壁2001年就搬走了",
    "上个月花了1500元",
    "12月6号下午3点停水",
    "从2026-12-06开始漏水",
    "3号楼2026-12-06起停水",
    "3号楼 08:30 开始停电",
    "78岁老人独居",
    "三分之一的路灯不亮",
    "3室2厅的房子",
    "楼上的邻居",
    "我家2026年装修的",
    "我家100多平",
    "我家120平米的房子",
    "我家3口人",
    "住在3号楼",
    "我家门口",
    "坐20路公交到站",
    "318国道边上",
    # Masked phones, issue ids, Open311 ids.
    "电话138****5678",
    "楼上138****5678",
    "Flat 138****5678",
    "和WH-20261206-0005是同一个问题",
    # English without a flat number.
    "the room is cold",
    "Room A is cold",
    "the unit I live in",
    "United Court has no lights",
    "Flatbush Avenue 12",
    "Bus 12 stop, Route 5",
    "No. 12 Chaoyang Road",
    "2 rooms flooded at 10:30",
    "",
])
def test_free_text_without_a_flat_is_left_as_written(text):
    assert mask_flats(text) == text


def test_flats_are_masked_after_the_scrub_without_cutting_a_phone():
    # request_view scrubs first: a phone is masked whole, then its digits are no flat.
    assert mask_flats(scrub_text("楼上402的电话13812345678")) == "楼上***的电话138****5678"


@given(building=st.integers(1, 40), unit=st.integers(1, 8), floor=st.integers(1, 33),
       room=st.integers(1, 8), mark=st.sampled_from(["", "室", "号", "号房"]),
       before=st.sampled_from(["我家", "住在", "", "Lide Garden "]),
       after=st.sampled_from(["漏水", "，天天漏水", "的暖气不热", " leaking"]))
def test_no_flat_number_survives_in_a_description(building, unit, floor, room, mark,
                                                  before, after):
    flat = f"{floor}{room:02d}"
    for text, public in (
            (f"{before}{building}号楼{unit}单元{flat}{mark}{after}",
             f"{before}{building}号楼***{after}"),
            (f"{before}{building}栋{flat}{mark}{after}", f"{before}{building}栋***{after}"),
            (f"{before}楼上{flat}{mark}{after}", f"{before}楼上***{after}")):
        assert mask_flats(text) == public, text
