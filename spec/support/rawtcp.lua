-- spec/support/rawtcp.lua: a raw TCP client on LuaJIT's FFI (busted runs
-- under luajit), for the specs that play a hostile HTTP client against
-- moonwait's metrics endpoint: bytes no HTTP library would send, clients
-- that stop reading, a thousand connections. 127.0.0.1 only.
local ffi = require("ffi")

ffi.cdef [[
typedef unsigned int socklen_t;
struct sockaddr_in_ { unsigned short family; unsigned short port; unsigned int addr; char zero[8]; };
struct pollfd_ { int fd; short events; short revents; };
int socket(int domain, int type, int protocol);
int connect(int fd, const void *addr, socklen_t len);
long send(int fd, const void *buf, unsigned long n, int flags);
long recv(int fd, void *buf, unsigned long n, int flags);
int close(int fd);
int poll(struct pollfd_ *fds, unsigned long n, int timeout);
int setsockopt(int fd, int level, int name, const void *v, socklen_t len);
unsigned short htons(unsigned short x);
]]

local C = ffi.C
local AF_INET, SOCK_STREAM, SOCK_NONBLOCK = 2, 1, 2048
local POLLIN, POLLOUT = 1, 4
local MSG_DONTWAIT, MSG_NOSIGNAL = 64, 16384
local SOL_SOCKET, SO_RCVBUF = 1, 8

local T = {}

-- A connection to 127.0.0.1:port, or nil. opts.rcvbuf: a small receive
-- buffer (a client that stops reading fills it sooner).
function T.connect(port, opts)
  local fd = C.socket(AF_INET, SOCK_STREAM + SOCK_NONBLOCK, 0)
  if fd < 0 then return nil end
  if opts and opts.rcvbuf then
    local v = ffi.new("int[1]", opts.rcvbuf)
    C.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, v, 4)
  end
  local sa = ffi.new("struct sockaddr_in_")
  sa.family = AF_INET
  sa.port = C.htons(port)
  sa.addr = 0x0100007f -- 127.0.0.1 in network order on little-endian
  C.connect(fd, sa, ffi.sizeof(sa)) -- EINPROGRESS: wait for writable
  local p = ffi.new("struct pollfd_[1]")
  p[0].fd, p[0].events = fd, POLLOUT
  if not (opts and opts.nowait) and C.poll(p, 1, 5000) ~= 1 then C.close(fd) return nil end
  return fd
end

-- Send s (as much as the kernel takes now, without blocking); returns the
-- bytes sent, or -1 when the peer is gone.
function T.send(fd, s)
  local n = C.send(fd, s, #s, MSG_DONTWAIT + MSG_NOSIGNAL)
  return tonumber(n)
end

-- Read until the peer closes or `secs` pass; returns the bytes and whether
-- the peer closed.
function T.read_all(fd, secs, stop_at)
  local buf = ffi.new("char[65536]")
  local out, deadline = {}, os.time() + (secs or 5) + 1
  local p = ffi.new("struct pollfd_[1]")
  p[0].fd, p[0].events = fd, POLLIN
  while os.time() <= deadline do
    if C.poll(p, 1, 100) == 1 then
      local n = tonumber(C.recv(fd, buf, 65536, MSG_DONTWAIT))
      if n == 0 or (n < 0 and ffi.errno() ~= 11) then return table.concat(out), true end
      if n > 0 then
        out[#out + 1] = ffi.string(buf, n)
        if stop_at and stop_at(table.concat(out)) then return table.concat(out), false end
      end
    end
  end
  return table.concat(out), false
end

function T.close(fd)
  C.close(fd)
end

-- One HTTP exchange on a fresh connection: the raw response bytes (the
-- peer closes, or `secs` pass).
function T.request(port, bytes, secs)
  local fd = assert(T.connect(port), "cannot connect to 127.0.0.1:" .. port)
  T.send(fd, bytes)
  local r = T.read_all(fd, secs or 5)
  T.close(fd)
  return r
end

return T
