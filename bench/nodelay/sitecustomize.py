# Put on PYTHONPATH of `ara-manage runserver` by bench/flush_rate.py: wsgiref's request handler then
# sets TCP_NODELAY on each accepted socket (socketserver.StreamRequestHandler.disable_nagle_algorithm).
# If the ~40 ms keep-alive stall is Nagle + delayed ACK, this removes it without touching the client.
import socketserver

socketserver.StreamRequestHandler.disable_nagle_algorithm = True
