"""A small Cloud Storage emulator for the tests: the JSON API that gcsfs, tensorstore and
google-cloud-storage use, in memory, on loopback.

  python tests/gcs_emulator.py BUCKET [BUCKET ...]   # prints "PORT <n>", serves until killed
  python tests/gcs_emulator.py --port=N --state=FILE BUCKET ...
      # on a given port; the objects are loaded from FILE if it exists and written to it
      # at SIGTERM: a store that goes away and comes back with its data (an outage)

What it implements: bucket metadata; object listing (prefix, delimiter, pages); object
metadata and media downloads (Range, generation preconditions, x-goog-generation and
x-goog-hash headers); simple, multipart and resumable uploads (chunked request bodies,
`Expect: 100-continue`, zero-byte objects, retried chunks); delete; copy, rewrite and
compose, move; and batch requests (gcsfs deletes many objects in one). Preconditions
(ifGenerationMatch, ifGenerationNotMatch, ifMetagenerationMatch) are enforced, so a lost
race between writers shows as HTTP 412 as on Cloud Storage. Requests are served on
threads, objects guarded by one lock. Anything else answers 501 and is logged to stderr.
"""
import base64
import datetime
import hashlib
import http.server
import itertools
import json
import re
import sys
import threading
import urllib.parse
import uuid

try:
  import google_crc32c

  def _crc32c(data):
    return google_crc32c.value(data)
except ImportError:  # pragma: no cover
  def _crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
      crc ^= byte
      for _ in range(8):
        crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _b64(raw):
  return base64.b64encode(raw).decode()


class Store:
  """Buckets of objects: name -> {"data", "generation", "metageneration", "contentType", ...}."""

  def __init__(self, buckets):
    self.lock = threading.Lock()
    self.buckets = {b: {} for b in buckets}
    self.generations = itertools.count(1_700_000_000_000_000)
    self.uploads = {}  # upload_id -> {"bucket", "name", "contentType", "data", "query"}

  def put(self, bucket, name, data, content_type="application/octet-stream", metadata=None):
    now = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    obj = {"data": bytes(data), "generation": next(self.generations), "metageneration": 1,
           "contentType": content_type or "application/octet-stream", "metadata": metadata,
           "timeCreated": now, "updated": now}
    self.buckets[bucket][name] = obj
    return obj


def resource(bucket, name, obj):
  data = obj["data"]
  out = {"kind": "storage#object", "id": f"{bucket}/{name}/{obj['generation']}", "name": name,
         "bucket": bucket, "generation": str(obj["generation"]),
         "metageneration": str(obj["metageneration"]), "contentType": obj["contentType"],
         "size": str(len(data)), "md5Hash": _b64(hashlib.md5(data).digest()),
         "crc32c": _b64(_crc32c(data).to_bytes(4, "big")), "etag": f"CP{obj['generation']}=",
         "storageClass": "STANDARD", "timeCreated": obj["timeCreated"], "updated": obj["updated"],
         "selfLink": f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}",
         "mediaLink": f"/download/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}?alt=media"}
  if obj.get("metadata"):
    out["metadata"] = obj["metadata"]
  return out


class HTTPError(Exception):
  def __init__(self, code, message=""):
    super().__init__(message)
    self.code, self.message = code, message


def _check_preconditions(query, obj):
  """Raises 412 when a generation/metageneration precondition fails (obj None: absent)."""
  generation = 0 if obj is None else obj["generation"]
  if "ifGenerationMatch" in query and int(query["ifGenerationMatch"]) != generation:
    raise HTTPError(412, "ifGenerationMatch failed")
  if "ifGenerationNotMatch" in query and int(query["ifGenerationNotMatch"]) == generation:
    raise HTTPError(304 if obj is not None else 412, "ifGenerationNotMatch")
  if "ifMetagenerationMatch" in query and (
      obj is None or int(query["ifMetagenerationMatch"]) != obj["metageneration"]):
    raise HTTPError(412, "ifMetagenerationMatch failed")


class Handler(http.server.BaseHTTPRequestHandler):
  protocol_version = "HTTP/1.1"
  store = None  # set by serve()

  def log_message(self, fmt, *args):  # quiet: only failures are logged (in _reply)
    pass

  # --- plumbing ------------------------------------------------------------------------
  def _body(self):
    if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
      out = b""
      while True:
        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
          while self.rfile.readline().strip():  # trailers
            pass
          return out
        out += self.rfile.read(size)
        self.rfile.readline()
    n = int(self.headers.get("Content-Length") or 0)
    return self.rfile.read(n) if n else b""

  def _reply(self, code, body=b"", headers=None, content_type="application/json"):
    if isinstance(body, (dict, list)):
      body = json.dumps(body).encode()
    if code >= 400 and code != 404:
      print(f"gcs_emulator: {code} for {self.command} {self.path}: {body[:200]!r}",
            file=sys.stderr, flush=True)
    self.send_response(code)
    if body or code not in (204, 304):
      self.send_header("Content-Type", content_type)
    for k, v in (headers or {}).items():
      self.send_header(k, v)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    if self.command != "HEAD" and body:
      try:
        self.wfile.write(body)
      except ConnectionError:  # the client stopped reading (a cancelled ranged read)
        self.close_connection = True

  def _error(self, code, message):
    self._reply(code, {"error": {"code": code, "message": message,
                                 "errors": [{"message": message, "reason": "emulator"}]}})

  def _dispatch(self):
    parsed = urllib.parse.urlsplit(self.path)
    query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
    parts = parsed.path.split("/")  # object names are %-encoded, so split before unquoting
    body = self._body()
    try:
      with self.store.lock:
        reply = self._route(self.command, parts, query, body)
    except HTTPError as e:
      return self._error(e.code, e.message or "error")
    if reply is None:
      print(f"gcs_emulator: not implemented: {self.command} {self.path}", file=sys.stderr,
            flush=True)
      return self._error(501, f"not implemented: {self.command} {parsed.path}")
    self._reply(*reply)

  do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch

  # --- the API -----------------------------------------------------------------------------
  def _bucket(self, name):
    if name not in self.store.buckets:
      raise HTTPError(404, f"no bucket {name}")
    return self.store.buckets[name]

  def _route(self, method, parts, query, body):
    p = [urllib.parse.unquote(x) for x in parts]
    if p[1:3] == ["batch", "storage"]:
      return self._batch(body)
    if p[1] == "upload" and p[2:4] == ["storage", "v1"] and p[4] == "b":
      return self._upload(method, p[5], query, body)
    if p[1] == "download":
      p = p[:1] + p[2:]
    if p[1:3] != ["storage", "v1"] or len(p) < 5 or p[3] != "b":
      return None
    bucket_name = p[4]
    bucket = self._bucket(bucket_name)
    if len(p) == 5 and method in ("GET", "HEAD"):
      return 200, {"kind": "storage#bucket", "id": bucket_name, "name": bucket_name,
                   "location": "US", "storageClass": "STANDARD", "metageneration": "1",
                   "timeCreated": "2020-01-01T00:00:00Z", "updated": "2020-01-01T00:00:00Z"}
    if len(p) == 6 and p[5] == "o" and method == "GET":
      return self._list(bucket_name, bucket, query)
    if len(p) >= 7 and p[5] == "o":
      name = p[6]
      if len(p) == 7:
        return self._object(method, bucket_name, bucket, name, query, body)
      if len(p) == 8 and p[7] == "compose" and method == "POST":
        return self._compose(bucket_name, bucket, name, query, body)
      if len(p) == 10 and p[7] == "moveTo" and method == "POST":
        return self._move(bucket_name, bucket, name, p[9], query)
      if len(p) == 12 and p[7] in ("copyTo", "rewriteTo") and method == "POST":
        return self._copy(p[7], bucket, name, p[9], p[11], query, body)
    return None

  def _list(self, bucket_name, bucket, query):
    prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
    start, end = query.get("startOffset", ""), query.get("endOffset", "")
    items, prefixes = [], set()
    for name in sorted(bucket):
      if not name.startswith(prefix) or name < start or (end and name >= end):
        continue
      rest = name[len(prefix):]
      if delimiter and delimiter in rest:
        prefixes.add(prefix + rest[:rest.index(delimiter) + len(delimiter)])
        continue
      items.append(name)
    entries = sorted([(n, "item") for n in items] + [(n, "prefix") for n in prefixes])
    token = query.get("pageToken", "")
    entries = [e for e in entries if e[0] > token] if token else entries
    page_size = int(query.get("maxResults") or 1000)
    page, more = entries[:page_size], len(entries) > page_size
    out = {"kind": "storage#objects",
           "items": [resource(bucket_name, n, bucket[n]) for n, k in page if k == "item"],
           "prefixes": [n for n, k in page if k == "prefix"]}
    if more:
      out["nextPageToken"] = page[-1][0]
    return 200, out

  def _media(self, obj):
    data = obj["data"]
    headers = {"x-goog-generation": str(obj["generation"]),
               "x-goog-metageneration": str(obj["metageneration"]),
               "x-goog-stored-content-length": str(len(data)),
               "x-goog-hash": f"crc32c={_b64(_crc32c(data).to_bytes(4, 'big'))},"
                              f"md5={_b64(hashlib.md5(data).digest())}",
               "ETag": f"CP{obj['generation']}=", "Accept-Ranges": "bytes"}
    rng = self.headers.get("Range")
    if rng:
      m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
      if not m:
        raise HTTPError(400, f"bad range {rng}")
      a, b = m.groups()
      if a == "":
        a, b = max(0, len(data) - int(b)), len(data) - 1
      else:
        a, b = int(a), (int(b) if b else len(data) - 1)
      if a >= len(data) and len(data) > 0:
        raise HTTPError(416, "range not satisfiable")
      b = min(b, len(data) - 1)
      headers["Content-Range"] = f"bytes {a}-{b}/{len(data)}"
      return 206, data[a:b + 1], headers, obj["contentType"]
    return 200, data, headers, obj["contentType"]

  def _object(self, method, bucket_name, bucket, name, query, body):
    obj = bucket.get(name)
    if method in ("GET", "HEAD"):
      if obj is None or ("generation" in query and int(query["generation"]) != obj["generation"]):
        raise HTTPError(404, f"no object {name}")
      _check_preconditions(query, obj)
      if query.get("alt") == "media":
        return self._media(obj)
      return 200, resource(bucket_name, name, obj)
    if method == "DELETE":
      if obj is None:
        raise HTTPError(404, f"no object {name}")
      _check_preconditions(query, obj)
      del bucket[name]
      return 204, b""
    if method in ("PATCH", "PUT"):
      if obj is None:
        raise HTTPError(404, f"no object {name}")
      _check_preconditions(query, obj)
      meta = json.loads(body or b"{}")
      if "metadata" in meta:
        obj["metadata"] = {**(obj.get("metadata") or {}), **(meta["metadata"] or {})}
      if "contentType" in meta:
        obj["contentType"] = meta["contentType"]
      obj["metageneration"] += 1
      return 200, resource(bucket_name, name, obj)
    return None

  def _store(self, bucket_name, name, data, query, content_type=None, metadata=None):
    bucket = self._bucket(bucket_name)
    _check_preconditions(query, bucket.get(name))
    obj = self.store.put(bucket_name, name, data, content_type, metadata)
    return 200, resource(bucket_name, name, obj)

  def _upload(self, method, bucket_name, query, body):
    kind = query.get("uploadType", "")
    if method == "POST" and kind == "media":
      return self._store(bucket_name, query["name"], body, query, self.headers.get("Content-Type"))
    if method == "POST" and kind == "multipart":
      boundary = re.search(r'boundary="?([^";]+)"?', self.headers.get("Content-Type", "")).group(1)
      parts = [p for p in body.split(b"--" + boundary.encode()) if p.strip() not in (b"", b"--")]
      meta_part, media_part = [p.split(b"\r\n\r\n", 1) for p in parts[:2]]
      meta = json.loads(meta_part[1].strip() or b"{}")
      media = media_part[1][:-2] if media_part[1].endswith(b"\r\n") else media_part[1]
      media_type = re.search(rb"content-type:\s*([^\r\n]+)", media_part[0], re.I)
      return self._store(bucket_name, meta.get("name") or query.get("name"), media, query,
                         meta.get("contentType") or (media_type and media_type.group(1).decode()),
                         meta.get("metadata"))
    if method == "POST" and kind == "resumable" and "upload_id" not in query:
      meta = json.loads(body or b"{}")
      upload_id = uuid.uuid4().hex
      self.store.uploads[upload_id] = {
          "bucket": bucket_name, "name": meta.get("name") or query.get("name"), "data": b"",
          "contentType": meta.get("contentType") or self.headers.get("X-Upload-Content-Type"),
          "metadata": meta.get("metadata"), "query": query}
      host = self.headers.get("Host")
      location = (f"http://{host}/upload/storage/v1/b/{bucket_name}/o?uploadType=resumable"
                  f"&upload_id={upload_id}")
      return 200, b"", {"Location": location, "X-GUploader-UploadID": upload_id}
    if method in ("PUT", "POST") and "upload_id" in query:
      return self._resume(query["upload_id"], body)
    if method == "DELETE" and "upload_id" in query:
      self.store.uploads.pop(query["upload_id"], None)
      return 499, b""
    return None

  def _resume(self, upload_id, body):
    up = self.store.uploads.get(upload_id)
    if up is None:
      raise HTTPError(404, "no such upload")
    m = re.fullmatch(r"bytes (\*|(\d+)-(\d+))/(\*|\d+)", self.headers.get("Content-Range", "").strip())
    if m is None:  # a whole body in one PUT
      start, total = 0, len(body)
    else:
      start = None if m.group(1) == "*" else int(m.group(2))
      total = None if m.group(4) == "*" else int(m.group(4))
    if start is not None and body:
      received = len(up["data"])
      if start > received:
        raise HTTPError(400, f"chunk at {start} after only {received} bytes")
      up["data"] = up["data"][:start] + body  # a retried chunk overwrites what it repeats
    if total is not None and len(up["data"]) >= total:
      del self.store.uploads[upload_id]
      return self._store(up["bucket"], up["name"], up["data"][:total], up["query"],
                         up["contentType"], up["metadata"])
    headers = {"Range": f"bytes=0-{len(up['data']) - 1}"} if up["data"] else {}
    return 308, b"", headers

  def _copy(self, how, bucket, name, dst_bucket, dst_name, query, body):
    src = bucket.get(name)
    if src is None:
      raise HTTPError(404, f"no object {name}")
    meta = json.loads(body or b"{}")
    code, res = self._store(dst_bucket, dst_name, src["data"], query,
                            meta.get("contentType") or src["contentType"],
                            meta.get("metadata", src.get("metadata")))
    if how == "rewriteTo":
      return code, {"kind": "storage#rewriteResponse", "totalBytesRewritten": res["size"],
                    "objectSize": res["size"], "done": True, "resource": res}
    return code, res

  def _move(self, bucket_name, bucket, name, dst_name, query):
    src = bucket.get(name)
    if src is None:
      raise HTTPError(404, f"no object {name}")
    _check_preconditions({k: v for k, v in query.items() if not k.startswith("ifSource")},
                         bucket.get(dst_name))
    bucket[dst_name] = dict(src, generation=next(self.store.generations))
    del bucket[name]
    return 200, resource(bucket_name, dst_name, bucket[dst_name])

  def _compose(self, bucket_name, bucket, name, query, body):
    req = json.loads(body or b"{}")
    data = b""
    for source in req.get("sourceObjects", []):
      if source["name"] not in bucket:
        raise HTTPError(404, f"no object {source['name']}")
      data += bucket[source["name"]]["data"]
    dest = req.get("destination", {})
    return self._store(bucket_name, name, data, query, dest.get("contentType"),
                       dest.get("metadata"))

  def _batch(self, body):
    boundary = re.search(r'boundary="?([^";]+)"?', self.headers.get("Content-Type", "")).group(1)
    out_boundary = "batch_" + uuid.uuid4().hex
    responses = []
    for part in body.split(b"--" + boundary.encode()):
      if part.strip() in (b"", b"--"):
        continue
      head, _, inner = part.partition(b"\r\n\r\n")
      content_id = re.search(rb"content-id:\s*<?([^>\r\n]+)>?", head, re.I)
      request_line, _, rest = inner.partition(b"\r\n")
      inner_headers, _, inner_body = rest.partition(b"\r\n\r\n")
      method, target = request_line.decode().split()[:2]
      parsed = urllib.parse.urlsplit(target)
      query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
      try:
        reply = self._route(method, parsed.path.split("/"), query, inner_body.rstrip(b"\r\n"))
        code, payload = (reply[0], reply[1]) if reply else (501, b"")
      except HTTPError as e:
        code, payload = e.code, {"error": {"code": e.code, "message": e.message}}
      if isinstance(payload, (dict, list)):
        payload = json.dumps(payload).encode()
      cid = content_id.group(1).decode() if content_id else ""
      responses.append(
          f"--{out_boundary}\r\nContent-Type: application/http\r\n"
          f"Content-ID: <response-{cid}>\r\n\r\nHTTP/1.1 {code} {self.responses.get(code, ('',))[0]}"
          f"\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
          + payload + b"\r\n")
    body = b"".join(responses) + f"--{out_boundary}--\r\n".encode()
    return 200, body, {}, f"multipart/mixed; boundary={out_boundary}"


def serve(buckets, port=0):
  """Starts the emulator on 127.0.0.1:port (0: a free one); returns the server."""
  Handler.store = Store(buckets)
  server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
  server.daemon_threads = True
  return server


def _main(argv):
  import os
  import pickle
  import signal
  opts = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.startswith("--")}
  buckets = [a for a in argv if not a.startswith("--")] or ["test-bucket"]
  srv = serve(buckets, int(opts.get("--port", 0)))
  state = opts.get("--state")
  if state and os.path.exists(state):
    with open(state, "rb") as f:
      Handler.store.buckets = pickle.load(f)
    last = max((o["generation"] for b in Handler.store.buckets.values() for o in b.values()),
               default=1_700_000_000_000_000)
    Handler.store.generations = itertools.count(last + 1)

  def stop(*_):
    if state:
      with Handler.store.lock:  # the objects as they are: an upload in flight is lost
        with open(state + ".tmp", "wb") as f:
          pickle.dump(Handler.store.buckets, f)
        os.replace(state + ".tmp", state)
    os._exit(0)

  signal.signal(signal.SIGTERM, stop)
  print(f"PORT {srv.server_address[1]}", flush=True)
  srv.serve_forever()


if __name__ == "__main__":
  _main(sys.argv[1:])
