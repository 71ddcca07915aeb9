"""twin_server.config"""
