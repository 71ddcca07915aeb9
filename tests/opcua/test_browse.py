"""Browse with reference subtypes looked up once (``opcua/patches/browse.py``): the
same answers as asyncua's own, also after a client adds a reference type."""

from __future__ import annotations

from asyncua import ua
from asyncua.server.address_space import ViewService

from tests.opcua.conftest import MODULE_LOOP, Served

pytestmark = MODULE_LOOP

_HIERARCHICAL = ua.NodeId(ua.ObjectIds.HierarchicalReferences)


def _browse(view: ViewService, nodeid: ua.NodeId, reftype: ua.NodeId,
            direction: ua.BrowseDirection) -> list[ua.ReferenceDescription]:
    (result,) = view.browse(ua.BrowseParameters(NodesToBrowse=[ua.BrowseDescription(
        NodeId=nodeid, BrowseDirection=direction, ReferenceTypeId=reftype,
        IncludeSubtypes=True, ResultMask=ua.BrowseResultMask.All)]))
    return list(result.References)


class TestBrowse:
    async def test_same_answers_as_asyncua(self, served: Served) -> None:
        """Every node of a session and of the Server object, browsed for hierarchical
        references (forward, inverse), Organizes, HasChild and all references, answers
        exactly what asyncua's own Browse answers."""
        iserver = served.server.asyncua.iserver
        ours, theirs = iserver.view_service, ViewService(iserver.aspace)
        assert type(ours)._suitable_reftype is not ours._suitable_reftype  # (patched)
        nodes = [n for n in iserver.aspace.keys()  # noqa: SIM118 (no __iter__)
                 if (isinstance(n.Identifier, str) and n.Identifier.startswith("Sessions."))
                 or n == ua.NodeId(ua.ObjectIds.Server)]
        assert len(nodes) > 100
        kinds = [_HIERARCHICAL, ua.NodeId(ua.ObjectIds.Organizes),
                 ua.NodeId(ua.ObjectIds.HasChild), ua.NodeId()]
        for nodeid in nodes:
            for kind in kinds:
                for direction in (ua.BrowseDirection.Forward, ua.BrowseDirection.Inverse):
                    assert (_browse(ours, nodeid, kind, direction)
                            == _browse(theirs, nodeid, kind, direction)), (nodeid, kind)

    async def test_a_reference_type_added_later_is_browsed(self, served: Served) -> None:
        """A client adds a subtype of HierarchicalReferences and a reference of it
        after a browse: the next browse for hierarchical references returns it."""
        view = served.server.asyncua.iserver.view_service
        source = served.var("").nodeid
        before = _browse(view, source, _HIERARCHICAL, ua.BrowseDirection.Forward)
        types = served.client.get_node(ua.NodeId(ua.ObjectIds.HierarchicalReferences))
        reftype = await types.add_reference_type(
            ua.NodeId("Test.RefersTo", served.ns), ua.QualifiedName("RefersTo", served.ns))
        target = served.client.get_node(ua.NodeId("TwinServer", served.ns))
        await served.client.get_node(source).add_reference(target.nodeid, reftype.nodeid)
        try:
            after = _browse(view, source, _HIERARCHICAL, ua.BrowseDirection.Forward)
            assert [r.NodeId for r in after] == [r.NodeId for r in before] + [target.nodeid]
        finally:
            await served.client.get_node(source).delete_reference(target.nodeid,
                                                                   reftype.nodeid)
            await reftype.delete()
