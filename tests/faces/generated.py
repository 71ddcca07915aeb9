"""A generated NodeSet2 file of any size, for the load tests and the bench: ``machines``
objects under Objects, each with ``variables`` AnalogItemType variables (Double, an
EURange and EngineeringUnits each: three nodes per variable)."""

from __future__ import annotations

from pathlib import Path

URI = "urn:twin-server:tests:generated"
_HEAD = """<?xml version="1.0" encoding="utf-8"?>
<UANodeSet xmlns="http://opcfoundation.org/UA/2011/03/UANodeSet.xsd"
           xmlns:uax="http://opcfoundation.org/UA/2008/02/Types.xsd">
  <NamespaceUris><Uri>{uri}</Uri></NamespaceUris>
  <Models><Model ModelUri="{uri}" Version="1.0.0" PublicationDate="2024-01-01T00:00:00Z">
    <RequiredModel ModelUri="http://opcfoundation.org/UA/" Version="1.04"
      PublicationDate="2019-05-01T00:00:00Z"/></Model></Models>
  <Aliases><Alias Alias="Double">i=11</Alias><Alias Alias="HasComponent">i=47</Alias>
    <Alias Alias="HasProperty">i=46</Alias><Alias Alias="Organizes">i=35</Alias>
    <Alias Alias="HasTypeDefinition">i=40</Alias><Alias Alias="Range">i=884</Alias>
    <Alias Alias="EUInformation">i=887</Alias></Aliases>
"""
_MACHINE = """  <UAObject NodeId="ns=1;i={id}" BrowseName="1:Machine{m}">
    <DisplayName>Machine{m}</DisplayName>
    <References><Reference ReferenceType="Organizes" IsForward="false">i=85</Reference>
      <Reference ReferenceType="HasTypeDefinition">i=58</Reference></References>
  </UAObject>
"""
_VARIABLE = """  <UAVariable NodeId="ns=1;i={id}" BrowseName="1:Value{v}" DataType="Double"
              AccessLevel="3">
    <DisplayName>Value{v}</DisplayName>
    <References>
      <Reference ReferenceType="HasComponent" IsForward="false">ns=1;i={parent}</Reference>
      <Reference ReferenceType="HasTypeDefinition">i=2368</Reference></References>
    <Value><uax:Double>{v}.5</uax:Double></Value>
  </UAVariable>
  <UAVariable NodeId="ns=1;i={range}" BrowseName="EURange" DataType="Range">
    <DisplayName>EURange</DisplayName>
    <References><Reference ReferenceType="HasProperty" IsForward="false">ns=1;i={id}</Reference>
      <Reference ReferenceType="HasTypeDefinition">i=68</Reference></References>
    <Value><uax:ExtensionObject><uax:TypeId><uax:Identifier>i=885</uax:Identifier></uax:TypeId>
      <uax:Body><uax:Range><uax:Low>0</uax:Low><uax:High>{high}</uax:High></uax:Range></uax:Body>
    </uax:ExtensionObject></Value>
  </UAVariable>
  <UAVariable NodeId="ns=1;i={unit}" BrowseName="EngineeringUnits" DataType="EUInformation">
    <DisplayName>EngineeringUnits</DisplayName>
    <References><Reference ReferenceType="HasProperty" IsForward="false">ns=1;i={id}</Reference>
      <Reference ReferenceType="HasTypeDefinition">i=68</Reference></References>
    <Value><uax:ExtensionObject><uax:TypeId><uax:Identifier>i=888</uax:Identifier></uax:TypeId>
      <uax:Body><uax:EUInformation><uax:NamespaceUri>http://www.opcfoundation.org/UA/units/un/cefact</uax:NamespaceUri>
        <uax:UnitId>5067859</uax:UnitId><uax:DisplayName><uax:Text>m</uax:Text></uax:DisplayName>
        <uax:Description><uax:Text>metre</uax:Text></uax:Description></uax:EUInformation></uax:Body>
    </uax:ExtensionObject></Value>
  </UAVariable>
"""


def write_nodeset(path: Path, machines: int, variables: int, uri: str = URI) -> int:
    """Write the file; returns its number of nodes."""
    parts = [_HEAD.format(uri=uri)]
    next_id = 1000
    count = 0
    for m in range(machines):
        machine = next_id
        next_id += 1
        parts.append(_MACHINE.format(id=machine, m=m))
        count += 1
        for v in range(variables):
            parts.append(_VARIABLE.format(id=next_id, v=v, parent=machine, range=next_id + 1,
                                          unit=next_id + 2, high=100 + v))
            next_id += 3
            count += 3
    parts.append("</UANodeSet>\n")
    path.write_text("".join(parts), encoding="utf-8")
    return count
