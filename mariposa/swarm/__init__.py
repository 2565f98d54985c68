"""Docker Swarm mode as a cluster for Mariposa's Docker services (issue 20): the Engine API's Swarm
endpoints (``client``), a ``ServiceSpec`` as a Swarm service spec (``spec``) and ``affinity`` as
Swarm placement (``placement``). The daemon checks its engine is a manager at start
(``require_manager``); with ``cluster = "swarm"`` its Docker driver is ``driver.SwarmDriver`` (tasks
as instances) and its continuous Docker services converge as Swarm services (``converge``)."""

from mariposa.swarm.client import SWARM_INIT_FIX as SWARM_INIT_FIX
from mariposa.swarm.client import SwarmClient as SwarmClient
from mariposa.swarm.client import SwarmError as SwarmError
from mariposa.swarm.client import require_manager as require_manager
from mariposa.swarm.placement import Placed as Placed
from mariposa.swarm.placement import Placement as Placement
from mariposa.swarm.placement import Problem as Problem
from mariposa.swarm.placement import place as place
from mariposa.swarm.spec import SwarmService as SwarmService
from mariposa.swarm.spec import overlay_name as overlay_name
from mariposa.swarm.spec import service_name as service_name
from mariposa.swarm.spec import swarm_service as swarm_service
