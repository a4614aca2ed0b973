import socket, time, subprocess, os, signal, sys
pid=int(sys.argv[1])
conns=[]
# keep-alive h1 connections that sent one request, idle ones, one mid-head, one h2 prior-knowledge
for i in range(5):
    c=socket.create_connection(("127.0.0.1",18777)); c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"); c.recv(1000); conns.append(c)
for i in range(3):
    conns.append(socket.create_connection(("127.0.0.1",18777)))
m=socket.create_connection(("127.0.0.1",18777)); m.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHo"); conns.append(m)
h=socket.create_connection(("127.0.0.1",18777)); h.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"); conns.append(h)
time.sleep(0.3)
t=time.time(); os.kill(pid, signal.SIGTERM)
while True:
    try: os.kill(pid,0)
    except ProcessLookupError: break
    if time.time()-t>10: print("still running after 10s"); break
    time.sleep(0.01)
print("exited %.2fs after SIGTERM"%(time.time()-t))
