"""RunCampaign and the ``Campaigns/<run>`` nodes: campaigns on the server.

::

    Objects/TwinServer
      RunCampaign(Campaign) -> RunNodeId              an operator's
      Campaigns/                          ns;s=Campaigns  (event notifier)
        <run>                             ns;s=Campaigns.<run>  ProgramStateMachineType
          CurrentState (+Id, Number), LastTransition (+Id, Number, TransitionTime)
                            Running while it runs, then Halted (RunningToHalted)
          Halt                            (0:Halt) an operator's: cancels the runs not
                                          finished (the finished ones are kept)
          Campaign, File, RunsOn, Results (String: the results folder on the server)
          State (String: running, finished, cancelled, error), Error (String)
          Total, Done, Failed, Cancelled (UInt32), Progress (Double, %)

A campaign ends with a ``CampaignFinishedEventType`` event (ns;s=CampaignFinishedEventType,
a subtype of BaseEventType) from its node (and Campaigns, TwinServer, Server): Message
is its summary, its own fields Run, Campaign, State, Results (String), Ok, Failed,
Cancelled (UInt32). The server keeps the nodes of the running campaign and of the last
``server.scenario_reports`` finished ones.

Status codes of RunCampaign: BadInvalidArgument for a campaign with errors (each with
file and key) or a file outside the scenario folders, BadNotFound for an unknown file,
BadResourceUnavailable while another campaign runs, BadNotSupported without Dask.
"""

from __future__ import annotations

from typing import Any, ClassVar

from asyncua import ua

from twin_server.campaigns.service import CampaignRun, CampaignService
from twin_server.errors import InvalidArgument, NotFound, TwinServerError
from twin_server.opcua.nodes import Argument
from twin_server.opcua.run_nodes import EventFields, RunObjects, Variables
from twin_server.opcua.tree import MethodSpec

CAMPAIGNS = "Campaigns"
EVENT_TYPE = "CampaignFinishedEventType"
SEVERITY = {"finished": 100, "cancelled": 300, "error": 800}

RUN_CAMPAIGN = MethodSpec(
    "RunCampaign",
    "Run a campaign (many what-if runs of a twin) on Dask in the background, as "
    "'twin-server campaign run' would: on a local cluster of worker processes at a lower "
    "priority than the live sessions, or on server.campaign_scheduler; it shows under "
    "Campaigns/<run> and ends with a CampaignFinished event",
    (Argument("Campaign", ua.VariantType.String,
              "The campaign in TOML, or the name of a campaign file relative to the "
              "scenario folders (server.scenario_dirs; default the config file's folder)"),),
    (Argument("RunNodeId", ua.VariantType.NodeId, "The campaign's node under Campaigns"),))

HALT = MethodSpec("Halt", "Cancel the runs not finished; the finished ones are kept")

_S, _D, _U = ua.VariantType.String, ua.VariantType.Double, ua.VariantType.UInt32

RUN_VARIABLES: Variables = (
    ("Campaign", _S, "The campaign's name", lambda r: r.campaign.name),
    ("File", _S, "Where the campaign came from (RunCampaign: given as text)",
     lambda r: r.campaign.file),
    ("RunsOn", _S, "The Dask cluster it runs on", lambda r: r.where),
    ("Results", _S, "The results folder on the server (results.sqlite, runs.csv, "
                    "trajectories.csv)", lambda r: str(r.results)),
    ("State", _S, "running, finished, cancelled or error", lambda r: r.state),
    ("Error", _S, "Why it could not run (empty if it did)", lambda r: r.error),
    ("Total", _U, "Runs in the campaign", lambda r: r.total),
    ("Done", _U, "Runs finished (ok or failed)", lambda r: r.done),
    ("Failed", _U, "Runs failed", lambda r: r.failed),
    ("Cancelled", _U, "Runs cancelled (Halt)", lambda r: r.cancelled),
    ("Progress", _D, "Runs done, in per cent of all", lambda r: float(r.progress)),
)

_EVENT_FIELDS: EventFields = (
    ("Run", _S, ""), ("Campaign", _S, ""), ("State", _S, ""), ("Results", _S, ""),
    ("Ok", _U, 0), ("Failed", _U, 0), ("Cancelled", _U, 0),
)


class CampaignNodes(RunObjects[CampaignRun]):
    """The RunCampaign method and the nodes of the service's campaigns."""

    FOLDER = CAMPAIGNS
    FOLDER_DESCRIPTION = "Campaigns (RunCampaign): the running one and the last finished"
    EVENT_TYPE = EVENT_TYPE
    EVENT_FIELDS = _EVENT_FIELDS
    START = RUN_CAMPAIGN
    HALT = HALT
    VARIABLES = RUN_VARIABLES
    UNITS: ClassVar[dict[str, str]] = {"Progress": "%"}
    LOG_KEY = "campaign"
    service: CampaignService

    async def start(self, *arguments: Any) -> CampaignRun:
        # (the one entry point of every front: POST /api/campaigns runs it too)
        return await self.service.run_campaign(*arguments)

    def argument_of(self, error: TwinServerError) -> int | None:
        """The Campaign argument's refusals (read: a bad campaign, a file outside the
        folders or not there) are its own; the others the call's."""
        return 0 if isinstance(error, InvalidArgument | NotFound) else None

    def describe(self, run: CampaignRun) -> str:
        return f"Campaign {run.campaign.name!r}: {run.total} runs on {run.where}"

    def running(self, run: CampaignRun) -> bool:
        return run.running

    def halt(self, run: CampaignRun) -> None:
        run.halt()

    def finished(self, run: CampaignRun) -> tuple[dict[str, Any], str, int]:
        fields = {"Run": run.name, "Campaign": run.campaign.name, "State": run.state,
                  "Results": str(run.results), "Ok": run.done - run.failed,
                  "Failed": run.failed, "Cancelled": run.cancelled}
        return fields, run.summary(), SEVERITY.get(run.state, 500)
