"""The terms a learned router reads in a report: character n-grams and words. Pure.

Residents write Chinese (now and then in traditional characters), English, or both
in one breath, colloquially and without the canonical nouns. A word list cannot
follow that; short character sequences can: 冒火花, 臭鸡蛋, 搭在树上 and "spark" in
"sparking" are all visible to a linear model as n-grams. :func:`terms` turns a text
into the bag of terms both the trainer and the runtime classifier use, so the two
can never disagree about what a feature is:

- Han runs: every 1-, 2- and 3-character sequence (no word segmenter: none is
  reliable on colloquial text, and n-grams are what a segmenter would guess from);
- Latin words: the word itself (``w:sparks``), each pair of neighbouring words
  (``w:rotten eggs``), and the 3- to 5-character pieces of the word padded with
  spaces (`` spa``, ``spark``), so "sparking", "sparks" and "sparked" share most
  of their features, and British and American spellings share theirs.

Traditional characters are folded into simplified ones first (:data:`TRADITIONAL`,
the common characters of this domain), so 電線 and 电线 are the same feature.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache

from services.routing.rules import normalise

__all__ = ["TRADITIONAL", "display_term", "fold", "term_counts", "terms", "terms_in",
           "weighed_words"]

# Traditional -> simplified for the characters residents' reports use most; the rest
# of a traditional text still shares the characters the two scripts have in common.
_PAIRS = (
    "電电 線线 燈灯 樓楼 門门 閘闸 氣气 體体 鄰邻 車车 廳厅 們们 個个 說说 點点 為为 會会 麼么 "
    "還还 讓让 問问 關关 東东 區区 報报 備备 題题 聽听 難难 響响 聲声 臺台 檯台 壞坏 漏漏 "
    "這这 裡里 裏里 來来 時时 處处 發发 現现 進进 過过 後后 開开 對对 與与 從从 讓让 幾几 "
    "頭头 邊边 見见 覺觉 話话 當当 應应 該该 給给 沒没 兒儿 樣样 麼么 嗎吗 嘛嘛 啊啊 呢呢 "
    "經经 歲岁 將将 專专 業业 務务 員员 區区 街街 辦办 處处 單单 戶户 層层 棟栋 號号 "
    "梯梯 飛飞 觸触 擊击 斷断 燒烧 爆爆 炸炸 險险 隱隐 患患 緊紧 急急 危危 搶抢 修修 "
    "漏漏 滲渗 濕湿 淹淹 滿满 堵堵 塞塞 溝沟 臭臭 髒脏 垃垃 圾圾 積积 糞粪 蟲虫 鼠鼠 "
    "貓猫 狗狗 傷伤 咬咬 園园 樹树 葉叶 枝枝 倒倒 歪歪 殘残 廢废 舊旧 損损 鬆松 蓋盖 "
    "暖暖 熱热 溫温 冷冷 凍冻 暫暂 停停 斷断 壓压 龍龙 熱热 噪噪 吵吵 鬧闹 擾扰 夜夜 "
    "違违 建建 築筑 搭搭 蓋盖 佔占 佔占 擋挡 礙碍 靠靠 輛辆 殭僵 屍尸 僵僵 鐵铁 鋼钢 "
    "牆墙 裂裂 縫缝 塊块 掉掉 陽阳 臺台 頂顶 屋屋 漿浆 磚砖 窗窗 戶户 樑梁 柱柱 "
    "鍋锅 爐炉 灶灶 煤煤 燃燃 瓦瓦 斯斯 聞闻 味味 蛋蛋 嗆呛 頭头 暈晕 "
    "電电 梯梯 困困 關关 層层 運运 轉转 異异 常常 費费 錢钱 業业 維维 護护 "
    "亂乱 堆堆 雜杂 物物 環环 衛卫 清清 潔洁 運运 輸输 場场 廣广 舞舞 "
    "鄰邻 居居 糾纠 紛纷 吵吵 架架 寵宠 養养 健健 身身 器器 材材 設设 施施 遊游 樂乐 "
    "燈灯 滅灭 黑黑 暗暗 亮亮 閃闪 爍烁 路路 巷巷 燈灯 桿杆 "
    "總总 統统 閥阀 錶表 計计 錯错 誤误 嚴严 礎础 煙烟 館馆 廁厕 換换 顯显 擺摆 攤摊 "
    "盞盏 網网 纜缆 櫃柜 鏈链 陰阴 濃浓 嚇吓 惡恶 媽妈 爺爷 孫孙 兩两 隻只 條条 幫帮 "
    "趕赶 請请 謝谢 學学 買买 賣卖 質质 動动 勁劲 漲涨 鑰钥 釘钉 則则 連连 遠远 "
    "絲丝 銅铜 鏽锈 壩坝 溼湿 灘滩 潑泼 傾倾 剝剥 墜坠 懸悬 晃晃 搖摇 鎖锁 "
)
TRADITIONAL: dict[str, str] = {pair[0]: pair[1] for pair in _PAIRS.split() if pair[0] != pair[1]}
_FOLD = str.maketrans(TRADITIONAL)
_TRADITIONAL = re.compile(f"[{''.join(TRADITIONAL)}]")  # most texts have none to fold

_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAN_RUN = re.compile(f"[{_HAN}]+")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_PIECE_SIZES = (3, 4, 5)


def fold(text: str) -> str:
    """The text as the features see it: normalised (``rules.normalise``), traditional
    characters folded to simplified."""
    text = normalise(text)
    return text.translate(_FOLD) if _TRADITIONAL.search(text) else text


def terms(text: str) -> list[str]:
    """Every term of ``text``, repeated as often as it occurs (see the module doc).

    >>> terms("电线 sparks")[:3]
    ['电', '线', '电线']
    """
    return terms_in(fold(text))


def terms_in(folded: str) -> list[str]:
    """:func:`terms` of a text already folded (:func:`fold`), in the same order."""
    found: list[str] = []
    for run in _HAN_RUN.findall(folded):
        found.extend(run)  # the 1-character terms
        found.extend([run[i:i + 2] for i in range(len(run) - 1)])
        found.extend([run[i:i + 3] for i in range(len(run) - 2)])
    previous = None
    for word in _WORD.findall(folded):
        found.append("w:" + word)
        if previous is not None:
            found.append(f"w:{previous} {word}")
        found.extend(_pieces(word))
        previous = word
    return found


@lru_cache(maxsize=8192)
def _pieces(word: str) -> tuple[str, ...]:
    """The 3- to 5-character pieces of ``word`` padded with spaces, as terms (words
    recur from report to report: each is cut once)."""
    padded = f" {word} "
    return tuple("c:" + padded[j:j + size] for size in _PIECE_SIZES
                 for j in range(len(padded) - size + 1))


def term_counts(text: str) -> Counter[str]:
    """How often each term occurs in ``text``."""
    return Counter(terms(text))


@lru_cache(maxsize=4096)  # the same strong terms are shown report after report
def display_term(term: str) -> str:
    """A term as a desk worker reads it: ``w:rotten eggs`` -> ``rotten eggs``,
    ``c: spar`` -> ``spar…``."""
    if term.startswith("w:"):
        return term[2:]
    if term.startswith("c:"):
        piece = term[2:]
        return ("" if piece.startswith(" ") else "…") + piece.strip() + (
            "" if piece.endswith(" ") else "…")
    return term


_AS_WRITTEN = re.compile(r"\w+(?:['\u2019]\w+)*")


def _as_written(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """How the report wrote its words and its Han n-grams: (folded word -> the word as
    written, folded n-gram -> the n-gram as written, in traditional characters if so)."""
    words: dict[str, str] = {}
    for span in _AS_WRITTEN.findall(text):
        folded = fold(span)
        if _WORD.fullmatch(folded):
            words.setdefault(folded, span)
    grams: dict[str, str] = {}
    for run in _HAN_RUN.findall(normalise(text)):  # folding changes no Han run's length
        folded = run.translate(_FOLD)
        for size in (1, 2, 3):
            for i in range(len(run) - size + 1):
                grams.setdefault(folded[i:i + size], run[i:i + size])
    return words, grams


def weighed_words(text: str, weights: Mapping[str, float],
                  count: int) -> list[tuple[str, float]]:
    """The words and n-grams of ``text`` that weighed most, each once, as the report
    wrote them: ``weights`` is each term's part in a score (:func:`terms` of ``text``).

    A word's pieces (`` rad``, ``adiat``...) are credited to the word, with the word's
    own term: "radiator" once, not eight of its pieces; a piece found in several of the
    report's words is shared between them by its occurrences. A pair of words is shown
    as the pair; a Han n-gram as itself (a word segmenter is no more reliable here than
    in the features). Only what weighed for the score (a positive sum) is shown.
    """
    written, grams = _as_written(text)
    words = Counter(_WORD.findall(fold(text)))
    totals: dict[str, float] = {}

    def credit(shown: str, weight: float) -> None:
        totals[shown] = totals.get(shown, 0.0) + weight

    for term, weight in weights.items():
        if term.startswith("c:"):  # a piece of some of the report's words
            holders = {w: n * _pieces(w).count(term) for w, n in words.items()}
            share = sum(holders.values())
            for word, held in holders.items():
                if held:
                    credit(written.get(word, word), weight * held / share)
        elif term.startswith("w:"):
            credit(" ".join(written.get(w, w) for w in term[2:].split(" ")), weight)
        else:
            credit(grams.get(term, term), weight)
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:count]
    return [(shown, round(weight, 4)) for shown, weight in ranked if weight > 0]
