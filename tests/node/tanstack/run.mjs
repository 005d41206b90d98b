// TanStack DB's electric collection and @electric-sql/client over shapesync, one scenario per run.
//
//   node run.mjs <scenario>     scenario: modes | optimistic | request-snapshot
//
// Env: SHAPESYNC_URL (the service), PG_HOST, PG_PORT, PG_USER, PG_DATABASE (the same database).
// Prints one JSON line {"ok": true, ...details} and exits 0, or prints the failure and exits 1.
// Driven by tests/api/test_tanstack.py; every wait has a deadline.

import http from 'node:http'
import { BTreeIndex, createCollection, createLiveQueryCollection, eq, gt } from '@tanstack/db'
import { electricCollectionOptions } from '@tanstack/electric-db-collection'
import { ShapeStream, isChangeMessage, isControlMessage } from '@electric-sql/client'
import pg from 'pg'

const URL_ = process.env.SHAPESYNC_URL + '/v1/shape'
const pool = new pg.Pool({
  host: process.env.PG_HOST,
  port: Number(process.env.PG_PORT),
  user: process.env.PG_USER ?? 'postgres',
  database: process.env.PG_DATABASE ?? 'postgres',
  max: 4,
})

// deterministic pseudo-random numbers (the seed comes from the test, so a failure can be replayed)
let seed = Number(process.env.SEED ?? 1)
const rand = (n) => {
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed % n
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function waitFor(what, check, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs
  let last
  while (Date.now() < deadline) {
    last = await check()
    if (last === true) return
    await sleep(25)
  }
  throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last)}`)
}

async function createTable(name, rows) {
  await pool.query(`DROP TABLE IF EXISTS "${name}"`)
  await pool.query(
    `CREATE TABLE "${name}" (id int PRIMARY KEY, grp int NOT NULL, score int NOT NULL, title text NOT NULL)`,
  )
  await pool.query(
    `INSERT INTO "${name}" SELECT i, i % 5, (i * 37) % 50, 't' || i FROM generate_series(1, ${rows}) i`,
  )
}

const plain = (r) => ({ id: r.id, grp: r.grp, score: r.score, title: r.title })

// One random transaction of inserts, updates and deletes; returns its txid (the backend pattern).
let nextId = 100000
async function randomWrites(table) {
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    const { rows } = await client.query(`SELECT id FROM "${table}" ORDER BY id`)
    const ids = rows.map((r) => r.id)
    const ops = 2 + rand(5)
    for (let i = 0; i < ops; i++) {
      const kind = rand(3)
      if (kind === 0 || ids.length < 10) {
        const id = nextId++
        await client.query(`INSERT INTO "${table}" VALUES ($1, $2, $3, $4)`, [id, rand(5), rand(60), 'n' + id])
        ids.push(id)
      } else if (kind === 1) {
        const id = ids[rand(ids.length)]
        await client.query(`UPDATE "${table}" SET grp = $2, score = $3 WHERE id = $1`, [id, rand(5), rand(60)])
      } else {
        const at = rand(ids.length)
        await client.query(`DELETE FROM "${table}" WHERE id = $1`, [ids[at]])
        ids.splice(at, 1)
      }
    }
    const { rows: tx } = await client.query('SELECT pg_current_xact_id()::xid::text AS txid')
    await client.query('COMMIT')
    return Number(tx[0].txid)
  } catch (e) {
    await client.query('ROLLBACK')
    throw e
  } finally {
    client.release()
  }
}

function electric(table, mode, extra = {}) {
  return createCollection(
    electricCollectionOptions({
      id: `${table}-${mode}`,
      // replica=full: an update then carries the whole row, which on-demand mode needs for a row it has not
      // loaded yet that moves into a live query's window (with `default` it gets only the changed columns)
      shapeOptions: { url: URL_, params: { table, replica: 'full' } },
      getKey: (row) => row.id,
      syncMode: mode,
      autoIndex: 'eager',
      defaultIndexType: BTreeIndex,
      ...extra,
    }),
  )
}

// -- scenario: eager / on-demand / progressive live queries keep matching Postgres -----------------------

async function liveQueriesMatch(mode) {
  const table = `ts_${mode.replace("-", "_")}${process.env.TABLE_SUFFIX ?? ""}`
  await createTable(table, 300)
  const coll = electric(table, mode)
  const top = createLiveQueryCollection((q) =>
    q
      .from({ i: coll })
      .where(({ i }) => eq(i.grp, 2))
      .orderBy(({ i }) => i.score, 'desc')
      .orderBy(({ i }) => i.id, 'asc')
      .limit(7),
  )
  const high = createLiveQueryCollection((q) => q.from({ i: coll }).where(({ i }) => gt(i.score, 40)))
  const queries = [
    [top, `SELECT id, grp, score, title FROM "${table}" WHERE grp = 2 ORDER BY score DESC, id ASC LIMIT 7`, true],
    [high, `SELECT id, grp, score, title FROM "${table}" WHERE score > 40 ORDER BY id`, false],
  ]
  await Promise.all(queries.map(([lq]) => lq.toArrayWhenReady()))

  const compare = async () => {
    for (const [lq, sql, ordered] of queries) {
      const { rows } = await pool.query(sql)
      let got = lq.toArray.map(plain)
      if (!ordered) got = got.sort((a, b) => a.id - b.id)
      if (JSON.stringify(got) !== JSON.stringify(rows)) return { sql, got, expected: rows }
    }
    return true
  }
  await waitFor(`${mode}: initial results`, compare)
  const rounds = 12
  for (let round = 0; round < rounds; round++) {
    // 1-3 transactions back to back, then wait for the last one's txid on the stream
    let txid
    for (let n = 1 + rand(3); n > 0; n--) txid = await randomWrites(table)
    await coll.utils.awaitTxId(txid, 15000)
    await waitFor(`${mode}: results after round ${round}`, compare)
  }
  const size = coll.size
  await top.cleanup()
  await high.cleanup()
  await coll.cleanup()
  return { mode, rounds, collectionSize: size }
}

// -- scenario: optimistic mutations through a backend that returns the txid ------------------------------

function startBackend(table) {
  // POST /insert {row}, /update {id, changes}, /delete {id}: each runs in a transaction and returns its txid
  const server = http.createServer(async (req, res) => {
    let body = ''
    for await (const chunk of req) body += chunk
    const msg = JSON.parse(body)
    const client = await pool.connect()
    try {
      await client.query('BEGIN')
      if (req.url === '/insert') {
        const r = msg.row
        await client.query(`INSERT INTO "${table}" VALUES ($1, $2, $3, $4)`, [r.id, r.grp, r.score, r.title])
      } else if (req.url === '/update') {
        await client.query(`UPDATE "${table}" SET score = $2, title = $3 WHERE id = $1`, [
          msg.id,
          msg.changes.score,
          msg.changes.title,
        ])
      } else if (req.url === '/delete') {
        await client.query(`DELETE FROM "${table}" WHERE id = $1`, [msg.id])
      }
      const { rows } = await client.query('SELECT pg_current_xact_id()::xid::text AS txid')
      await client.query('COMMIT')
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ txid: Number(rows[0].txid) }))
    } catch (e) {
      await client.query('ROLLBACK')
      res.writeHead(500)
      res.end(String(e))
    } finally {
      client.release()
    }
  })
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)))
}

async function optimistic(mode) {
  const table = `ts_optimistic_${mode.replace('-', '_')}`
  await createTable(table, 50)
  const server = await startBackend(table)
  const backend = `http://127.0.0.1:${server.address().port}`
  const call = async (path, payload) => {
    const res = await fetch(backend + path, { method: 'POST', body: JSON.stringify(payload) })
    if (!res.ok) throw new Error(`backend ${path}: ${res.status} ${await res.text()}`)
    return res.json()
  }
  const txids = []
  const coll = electric(table, mode, {
    onInsert: async ({ transaction }) => {
      const { txid } = await call('/insert', { row: transaction.mutations[0].modified })
      txids.push(txid)
      return { txid }
    },
    onUpdate: async ({ transaction }) => {
      const m = transaction.mutations[0]
      const { txid } = await call('/update', { id: m.key, changes: m.modified })
      txids.push(txid)
      return { txid }
    },
    onDelete: async ({ transaction }) => {
      const { txid } = await call('/delete', { id: transaction.mutations[0].key })
      txids.push(txid)
      return { txid }
    },
  })
  const all = createLiveQueryCollection((q) => q.from({ i: coll }).orderBy(({ i }) => i.id, 'asc'))
  await all.toArrayWhenReady()

  const row = { id: 777, grp: 1, score: 12, title: 'optimistic' }
  const inserted = coll.insert(row)
  if (!coll.has(777)) throw new Error('the optimistic insert is not visible at once')
  await inserted.isPersisted.promise // resolves only when the txid came back on the stream
  const synced = coll.get(777)
  if (JSON.stringify(plain(synced)) !== JSON.stringify(row)) throw new Error(`synced row ${JSON.stringify(synced)}`)

  const updated = coll.update(777, (draft) => {
    draft.score = 13
    draft.title = 'updated'
  })
  await updated.isPersisted.promise
  const deleted = coll.delete(5)
  await deleted.isPersisted.promise

  const { rows } = await pool.query(`SELECT id, grp, score, title FROM "${table}" ORDER BY id`)
  const got = all.toArray.map(plain)
  if (JSON.stringify(got) !== JSON.stringify(rows)) {
    throw new Error(`collection != Postgres: ${JSON.stringify({ got: got.length, expected: rows.length })}`)
  }
  await all.cleanup()
  await coll.cleanup()
  server.close()
  return { mode, txids, rows: rows.length }
}

// -- scenario: requestSnapshot on a changes_only stream -----------------------------------------------------

async function requestSnapshot() {
  const table = 'ts_request_snapshot'
  await createTable(table, 100)
  const stream = new ShapeStream({ url: URL_, params: { table }, log: 'changes_only' })
  const rows = new Map()
  const seenTxids = new Set()
  let upToDate = 0
  let snapshotEnds = 0
  const unsubscribe = stream.subscribe((messages) => {
    for (const m of messages) {
      if (isChangeMessage(m)) {
        for (const x of m.headers.txids ?? []) seenTxids.add(Number(x))
        if (m.headers.operation === 'delete') rows.delete(m.key)
        else rows.set(m.key, { ...(rows.get(m.key) ?? {}), ...m.value })
      } else if (isControlMessage(m)) {
        if (m.headers.control === 'up-to-date') upToDate++
        if (m.headers.control === 'snapshot-end') snapshotEnds++
      }
    }
  })
  await waitFor('first up-to-date', () => upToDate > 0 || { upToDate })
  if (rows.size !== 0) throw new Error(`a changes_only stream delivered ${rows.size} snapshot rows`)

  const { metadata, data } = await stream.requestSnapshot({
    where: 'grp = $1',
    params: { 1: '1' },
    orderBy: 'score DESC, id',
    limit: 8,
  })
  const { rows: expected } = await pool.query(
    `SELECT id, grp, score, title FROM "${table}" WHERE grp = 1 ORDER BY score DESC, id LIMIT 8`,
  )
  const snapIds = data.map((m) => m.value.id)
  if (JSON.stringify(snapIds) !== JSON.stringify(expected.map((r) => r.id))) {
    throw new Error(`snapshot rows ${JSON.stringify(snapIds)} != ${JSON.stringify(expected.map((r) => r.id))}`)
  }
  if (rows.size !== 8) throw new Error(`the snapshot rows were not injected into the stream (${rows.size})`)
  for (const k of ['xmin', 'xmax', 'xip_list', 'database_lsn', 'snapshot_mark']) {
    if (!(k in metadata)) throw new Error(`metadata lacks ${k}`)
  }

  // a later write to a snapshot row arrives as a change carrying the txid; the row then equals Postgres
  const client = await pool.connect()
  let txid
  try {
    await client.query('BEGIN')
    await client.query(`UPDATE "${table}" SET title = 'after' WHERE id = $1`, [snapIds[0]])
    txid = Number((await client.query('SELECT pg_current_xact_id()::xid::text AS t')).rows[0].t)
    await client.query('COMMIT')
  } finally {
    client.release()
  }
  await waitFor(`txid ${txid} on the stream`, () => seenTxids.has(txid) || { seen: [...seenTxids] })
  const key = data[0].key
  if (rows.get(key).title !== 'after') throw new Error(`row ${key} is ${JSON.stringify(rows.get(key))}`)
  unsubscribe()
  return { snapshot: snapIds.length, snapshotEnds, txid }
}

// -- main ----------------------------------------------------------------------------------------------------

const scenario = process.argv[2]
try {
  let result
  if (scenario === 'modes') {
    result = []
    for (const mode of (process.env.MODES ?? 'eager,on-demand,progressive').split(',')) result.push(await liveQueriesMatch(mode))
  } else if (scenario === 'optimistic') {
    result = [await optimistic('eager'), await optimistic('on-demand')]
  } else if (scenario === 'request-snapshot') {
    result = await requestSnapshot()
  } else {
    throw new Error(`unknown scenario ${scenario}`)
  }
  console.log(JSON.stringify({ ok: true, scenario, result }))
  await pool.end()
  process.exit(0)
} catch (e) {
  console.log(JSON.stringify({ ok: false, scenario, error: String(e?.stack ?? e) }))
  process.exit(1)
}
