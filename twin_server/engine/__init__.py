"""twin_server.engine"""
