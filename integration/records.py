"""Bike-station-status records shaped like Seoul's open API (따릉이 ``bikeList``) rows.

Each row is what ``/{key}/json/bikeList/{start}/{end}/`` returns (every value
a string, ``shared`` the percentage of racks in use), plus the producer's poll
timestamp. Keyed by ``stationId``. Deterministic for a given seed and start
time, so a failure can be reproduced.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

KST = timezone(timedelta(hours=9), "KST")

# (stationId, stationName, latitude, longitude, racks): stations around Mapo,
# Yeouido and Gangseo, coordinates within a few metres of the real ones.
STATIONS: tuple[tuple[str, str, str, str, int], ...] = (
    ("ST-4", "102. 망원역 1번출구 앞", "37.55564880", "126.91062927", 15),
    ("ST-5", "103. 망원역 2번출구 앞", "37.55495071", "126.91083527", 14),
    ("ST-6", "104. 합정역 1번출구 앞", "37.55073929", "126.91508484", 13),
    ("ST-7", "105. 합정역 5번출구 앞", "37.55000687", "126.91482544", 5),
    ("ST-8", "106. 합정역 7번출구 앞", "37.54864502", "126.91282654", 12),
    ("ST-9", "107. 신한은행 서교동지점", "37.55751038", "126.91850281", 5),
    ("ST-10", "108. 서교동 사거리", "37.55274582", "126.91861725", 12),
    ("ST-11", "109. 제일빌딩 앞", "37.54769135", "126.92271423", 10),
    ("ST-12", "111. 상수역 2번출구 앞", "37.54787064", "126.92353058", 10),
    ("ST-13", "112. 극동방송국 앞", "37.54920578", "126.92320251", 15),
    ("ST-14", "113. 홍대입구역 2번출구 앞", "37.55743027", "126.92448425", 20),
    ("ST-15", "114. 홍대입구역 8번출구 앞", "37.55720139", "126.92530060", 10),
    ("ST-16", "115. 사천교", "37.56819916", "126.91413879", 15),
    ("ST-18", "118. 광흥창역 2번출구 앞", "37.54760361", "126.93254852", 10),
    ("ST-19", "119. 서강나루 공원", "37.54453659", "126.93145752", 15),
    ("ST-20", "120. 신촌역(2호선) 1번출구 옆", "37.55517960", "126.93676758", 12),
    ("ST-21", "121. 마포소방서 앞", "37.54968643", "126.95491791", 12),
    ("ST-22", "122. 신성기사식당 앞", "37.56172562", "126.90515137", 8),
    ("ST-33", "207. 여의나루역 1번출구 앞", "37.52712631", "126.93264008", 40),
    ("ST-3193", "2715.마곡나루역 2번 출구", "37.56710052", "126.82735443", 20),
)


@dataclass(frozen=True)
class Record:
    key: bytes
    value: bytes

    @property
    def row(self) -> dict[str, str]:
        return json.loads(self.value)


def station_rows(
    count: int, *, seed: int = 0, start: datetime | None = None, interval_s: int = 60
) -> list[dict[str, str]]:
    """``count`` rows: every station polled in turn, one poll per ``interval_s``, bikes drifting a little."""
    rng = random.Random(seed)
    start = (start or datetime.now(KST)).astimezone(KST).replace(microsecond=0)
    parked = {sid: rng.randint(0, racks) for sid, _, _, _, racks in STATIONS}
    rows = []
    for i in range(count):
        sid, name, lat, lon, racks = STATIONS[i % len(STATIONS)]
        poll = i // len(STATIONS)
        parked[sid] = max(0, min(racks + 5, parked[sid] + rng.randint(-2, 2)))  # bikes may exceed racks
        rows.append(
            {
                "rackTotCnt": str(racks),
                "stationName": name,
                "parkingBikeTotCnt": str(parked[sid]),
                "shared": str(round(parked[sid] * 100 / racks)),
                "stationLatitude": lat,
                "stationLongitude": lon,
                "stationId": sid,
                "pollTimestamp": (start + timedelta(seconds=poll * interval_s)).isoformat(),
            }
        )
    return rows


def encode(row: dict[str, str]) -> Record:
    return Record(key=row["stationId"].encode(), value=json.dumps(row, ensure_ascii=False).encode("utf-8"))


def records(count: int, *, seed: int = 0, start: datetime | None = None) -> list[Record]:
    return [encode(row) for row in station_rows(count, seed=seed, start=start)]
