// Drives shapesync with the official @electric-sql/client, for tests/api/test_official_client.py.
//
// The pytest side owns Postgres (it makes every write) and talks to this process through lines of JSON:
// commands on stdin, events on stdout.  Nothing here sleeps or polls: every event is emitted when the
// client reports it, and the pytest side waits for the event it expects with a deadline.
//
// Commands:
//   {"cmd": "open", "id": S, "params": {...}, "offset"?: O, "handle"?: H, "liveSse"?: bool,
//    "from"?: S2, "logBodies"?: bool}
//       starts a ShapeStream (url = $SHAPESYNC_URL/v1/shape) with a Shape over it.  With "from", the strict
//       materialisation starts from the rows stream S2 held when it was closed (a resumed client).
//   {"cmd": "close", "id": S}            aborts the stream; answers {"ev": "closed", handle, offset, rows}.
//   {"cmd": "mark", "label": L}          answers {"ev": "mark", "label": L}: puts a test's step on the timeline.
//   {"cmd": "exit"}                      closes everything and exits 0.
// Events:
//   {"ev": "request", "id", "n", "url", "status" | "error", "headers", "body"?}   every HTTP exchange
//   {"ev": "batch", "id", "messages"}                                             every batch the stream publishes
//   {"ev": "state", "id", "rows", "shapeRows", "handle", "offset", "violations", "mustRefetch"}
//        after every batch ending with up-to-date: `rows` is our strict materialisation (an insert of a key
//        we hold, or an update/delete of a key we do not hold, is a violation; a change whose lsn/op_position
//        was applied already is skipped and counted in `redelivered`), `shapeRows` is Shape's.
//   {"ev": "error", "id", "message", "status"?}                                   the stream gave up
//
// Values are JSON with tags for what JSON cannot carry: BigInt -> {"$bigint": "123"}, non-finite numbers
// -> {"$number": "NaN"}, undefined inside arrays -> {"$undefined": true}.

import readline from 'node:readline'
import { Shape, ShapeStream, isChangeMessage, isControlMessage } from '@electric-sql/client'

const BASE = process.env.SHAPESYNC_URL
if (!BASE) {
  process.stderr.write('SHAPESYNC_URL is not set\n')
  process.exit(2)
}

function tag(_key, value) {
  if (typeof value === 'bigint') return { $bigint: value.toString() }
  if (typeof value === 'number' && !Number.isFinite(value)) return { $number: String(value) }
  return value
}

const started = performance.now()

function emit(event) {
  event.t = Math.round(performance.now() - started)
  process.stdout.write(JSON.stringify(event, tag) + '\n')
}

const streams = new Map()

function electricHeaders(headers) {
  const out = {}
  for (const [k, v] of headers.entries()) {
    if (k.startsWith('electric-') || k === 'cache-control' || k === 'content-type' || k === 'retry-after') out[k] = v
  }
  return out
}

function loggingFetch(id, logBodies) {
  let n = 0
  return async (input, init) => {
    const url = input.toString()
    const seq = n++
    let res
    try {
      res = await fetch(input, init)
    } catch (err) {
      if (!init?.signal?.aborted) emit({ ev: 'request', id, n: seq, url, error: String(err?.cause?.code ?? err) })
      throw err
    }
    const event = { ev: 'request', id, n: seq, url, status: res.status, headers: electricHeaders(res.headers) }
    const isSse = (res.headers.get('content-type') ?? '').startsWith('text/event-stream')
    if (logBodies && !isSse && res.status === 200) {
      try {
        event.body = JSON.parse(await res.clone().text())
      } catch (err) {
        event.body = { unreadable: String(err) }
      }
    }
    emit(event)
    return res
  }
}

function sortedRows(map) {
  return [...map.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, row]) => row)
}

function open(cmd) {
  const { id } = cmd
  if (streams.has(id)) throw new Error(`stream ${id} is already open`)
  const aborter = new AbortController()
  const strict = new Map(cmd.from ? streams.get(cmd.from)?.closedRows ?? [] : [])
  const entry = {
    aborter,
    strict,
    applied: new Set(cmd.from ? streams.get(cmd.from)?.applied ?? [] : []),
    redelivered: 0,
    violations: [],
    mustRefetch: 0,
    closedRows: null,
  }
  const stream = new ShapeStream({
    url: `${BASE}/v1/shape`,
    params: cmd.params,
    offset: cmd.offset,
    handle: cmd.handle,
    liveSse: Boolean(cmd.liveSse),
    signal: aborter.signal,
    fetchClient: loggingFetch(id, Boolean(cmd.logBodies)),
    // Quick retries so a restarted service is found again fast; the client's own backoff does the work.
    backoffOptions: { initialDelay: 50, maxDelay: 500, multiplier: 1.5 },
    onError: (err) => {
      emit({ ev: 'error', id, message: String(err?.message ?? err), status: err?.status })
    },
  })
  const shape = new Shape(stream)
  entry.stream = stream
  entry.shape = shape
  streams.set(id, entry)

  stream.subscribe(
    (messages) => {
      emit({ ev: 'batch', id, messages })
      let upToDate = false
      for (const msg of messages) {
        if (isChangeMessage(msg)) {
          const op = msg.headers.operation
          const at = msg.headers.lsn === undefined ? null : `${msg.headers.lsn}_${msg.headers.op_position}`
          if (at !== null && entry.applied.has(at)) {
            // The same log entry again (an SSE client resumes from `<lsn>_0` of the last up-to-date, spec
            // §11): skip it, but count it so long-poll tests can demand none.
            entry.redelivered += 1
            continue
          }
          if (at !== null) entry.applied.add(at)
          const held = strict.get(msg.key)
          if (op === 'insert') {
            if (held !== undefined) entry.violations.push({ op, key: msg.key, why: 'insert of a held key' })
            strict.set(msg.key, { ...msg.value })
          } else if (op === 'update') {
            if (held === undefined) entry.violations.push({ op, key: msg.key, why: 'update of a missing key' })
            strict.set(msg.key, { ...(held ?? {}), ...msg.value })
          } else if (op === 'delete') {
            if (held === undefined) entry.violations.push({ op, key: msg.key, why: 'delete of a missing key' })
            strict.delete(msg.key)
          }
        } else if (isControlMessage(msg)) {
          if (msg.headers.control === 'must-refetch') {
            strict.clear()
            entry.applied.clear()
            entry.mustRefetch += 1
          } else if (msg.headers.control === 'up-to-date') {
            upToDate = true
          }
        }
      }
      if (upToDate) {
        emit({
          ev: 'state',
          id,
          rows: sortedRows(strict),
          shapeRows: sortedRows(shape.currentValue),
          handle: stream.shapeHandle,
          offset: stream.lastOffset,
          violations: entry.violations,
          redelivered: entry.redelivered,
          mustRefetch: entry.mustRefetch,
        })
      }
    },
    (err) => emit({ ev: 'error', id, message: String(err?.message ?? err), status: err?.status }),
  )
}

function close(cmd) {
  const entry = streams.get(cmd.id)
  if (!entry) throw new Error(`no stream ${cmd.id}`)
  entry.closedRows = [...entry.strict.entries()]
  const handle = entry.stream.shapeHandle
  const offset = entry.stream.lastOffset
  entry.stream.unsubscribeAll()
  entry.aborter.abort()
  streams.delete(cmd.id)
  // Keep the rows for a later {"from": id}.
  streams.set(`closed:${cmd.id}`, entry)
  emit({ ev: 'closed', id: cmd.id, handle, offset, rows: entry.closedRows.map(([, row]) => row) })
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  if (!line.trim()) return
  let cmd
  try {
    cmd = JSON.parse(line)
    if (cmd.cmd === 'open') {
      if (cmd.from) cmd.from = `closed:${cmd.from}`
      open(cmd)
    } else if (cmd.cmd === 'close') close(cmd)
    else if (cmd.cmd === 'mark') emit({ ev: 'mark', label: cmd.label })
    else if (cmd.cmd === 'exit') {
      for (const entry of streams.values()) entry.aborter.abort()
      process.exit(0)
    } else throw new Error(`unknown command ${line}`)
  } catch (err) {
    emit({ ev: 'fatal', message: String(err?.stack ?? err), line })
  }
})
rl.on('close', () => process.exit(0))
emit({ ev: 'ready' })
