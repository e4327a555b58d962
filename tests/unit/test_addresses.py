"""The public form of an address (shared.addresses): the building, never the flat."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.addresses import public_address
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
