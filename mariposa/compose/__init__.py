"""`mariposa project import-compose`: a docker compose file to a Mariposa manifest, with a
report of every field (mapped, mapped with a change, or not mapped and why).

- ``convert.py`` reads the file and builds the manifest, ``fields.py`` is the table of every
  compose field, ``engine.py`` the rule kinds of that table, ``values.py`` compose's spellings of
  durations, ports and health check tests, ``interpolate.py`` its ``${VARIABLES}``, and
  ``report.py`` the report.
"""

from mariposa.compose.convert import Conversion as Conversion
from mariposa.compose.convert import convert as convert
from mariposa.compose.interpolate import dotenv as dotenv
from mariposa.compose.report import CHANGED as CHANGED
from mariposa.compose.report import MAPPED as MAPPED
from mariposa.compose.report import UNMAPPED as UNMAPPED
from mariposa.compose.report import Entry as Entry
