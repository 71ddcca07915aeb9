"""twin_server.opcua"""
