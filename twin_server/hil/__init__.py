"""twin_server.hil"""
