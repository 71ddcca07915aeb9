"""Machine faces: a real machine's own OPC UA address space (its NodeSet2 files)
served with the twin's values behind it (issue #21; README, "Machine faces").

    nodeset.py   reading NodeSet2 XML files into node records (streaming)
    values.py    a NodeSet2 ``<Value>`` as a ``ua.Variant``
    loader.py    the files in dependency order, built into an address space in bulk
"""
