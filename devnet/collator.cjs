'use strict'
// chopsticks' block authoring made to behave like a collator's: Passerelle's "Collator" block
// mode (devnet/chopsticks.py loads this file with `node --require` in front of chopsticks'
// CLI and runs chopsticks in its own Manual mode; nothing else changes).
//
// Why: in chopsticks' Instant mode every submitted extrinsic gets a block of its own, built
// in arrival order, so N extrinsics sent while one block builds cost N more blocks, each with
// a block's fixed cost (~0.3 s of the runtime's work). A real collator puts what is ready
// into its next block, up to the block's weight. chopsticks' Batch mode comes closer but
// (1) cuts a batch at a 100 ms debounce, not at the start of the next build, and (2) DROPS
// an extrinsic that did not fit the block (ExhaustsResources), and with it any later
// extrinsic of the same account (its nonce is then in the future), where a node keeps both
// for the next block.
//
// This mode: whenever no block is being built and extrinsics are pending, one block is
// built with all of them, in arrival order. In any block (dev_newBlock's too), an extrinsic
// refused for want of room (ExhaustsResources) goes first in line for the next block, unless
// it was alone in its block (it fits no block: dropped, as chopsticks always does); one
// refused for a nonce gap (Future) goes after what arrives meanwhile, alone or not: arrival
// order is not nonce order (chopsticks validates the extrinsics of one JSON-RPC batch
// concurrently, so a later nonce can be pooled, built alone and refused before the earlier
// one arrives: dropping it wedged the account, the failure of CI's run of 5c5abdb). Either
// is dropped once it has missed MAX_TRIES blocks. Every other refusal is dropped as
// chopsticks drops it. A block is followed at once by another only if it included something
// or something arrived while it was built: so a kept extrinsic whose gap is real costs at
// most MAX_TRIES blocks, and nothing builds empty blocks for ever. A kept extrinsic's
// author_submitAndWatchExtrinsic subscribers are still told it failed (chopsticks tells them
// at the refusal); the devnet's clients submit without watching and look for their
// extrinsics in blocks.
const path = require('node:path')
const { isMainThread } = require('node:worker_threads')

const MAX_TRIES = 8

function chopsticksTxPool() {
  // The chopsticks-core that chopsticks' own CLI (process.argv[1]) loads: the same module
  // instance, so the class patched here is the one its chain uses.
  const core = require.resolve('@acala-network/chopsticks-core', {
    paths: [path.dirname(process.argv[1])],
  })
  return require(path.join(path.dirname(core), 'blockchain', 'txpool.js'))
}

function install({ TxPool, APPLY_EXTRINSIC_ERROR }) {
  const collators = new WeakMap()

  function collatorOf(pool) {
    let collator = collators.get(pool)
    if (collator === undefined) {
      // next: kept for the next block, in order; refused: what the builds refused and why.
      collator = { building: false, next: [], refused: new Map() }
      pool.event.on(APPLY_EXTRINSIC_ERROR, ([extrinsic, error]) => {
        const invalid = error && error.isInvalid ? error.asInvalid : undefined
        if (invalid && (invalid.isExhaustsResources || invalid.isFuture)) {
          collator.refused.set(extrinsic, invalid.type)
        }
      })
      collators.set(pool, collator)
    }
    return collator
  }

  const buildBlock = TxPool.prototype.buildBlock
  TxPool.prototype.buildBlock = async function (params) {
    const collator = collatorOf(this)
    let tries = new Map()
    if (!(params && params.transactions)) {
      // chopsticks takes the pool's extrinsics only when given none: take the kept ones,
      // then the pool, and empty it at once, so that what arrives during the build waits for
      // the next. The messages a parachain block carries (none on this devnet) are taken
      // from the pool only where the caller gave none, as chopsticks does; the others stay.
      const kept = collator.next.splice(0)
      tries = new Map(kept.map((entry) => [entry.extrinsic, entry.tries]))
      const roomless = kept.filter((entry) => entry.why === 'ExhaustsResources')
      const gapped = kept.filter((entry) => entry.why !== 'ExhaustsResources')
      const given = params || {}
      const stay = {
        ump: given.upwardMessages ? { ...this.ump } : {},
        dmp: given.downwardMessages ? this.dmp.slice() : [],
        hrmp: given.horizontalMessages ? { ...this.hrmp } : {},
      }
      params = {
        ...given,
        transactions: [
          ...roomless.map((entry) => entry.extrinsic),
          ...this.pendingExtrinsics,
          ...gapped.map((entry) => entry.extrinsic),
        ],
        upwardMessages: given.upwardMessages || { ...this.ump },
        downwardMessages: given.downwardMessages || this.dmp.slice(),
        horizontalMessages: given.horizontalMessages || { ...this.hrmp },
      }
      this.clear() // the only way to empty chopsticks' private pool; what stays is put back
      Object.assign(this.ump, stay.ump)
      this.dmp.push(...stay.dmp)
      Object.assign(this.hrmp, stay.hrmp)
    }
    const { transactions } = params
    await buildBlock.call(this, params)
    let refused = 0
    for (const extrinsic of transactions) {
      const why = collator.refused.get(extrinsic)
      if (why === undefined) continue
      refused += 1
      collator.refused.delete(extrinsic)
      const tried = (tries.get(extrinsic) || 0) + 1
      // Alone and out of room, it fits no block; alone and gapped, its predecessor may
      // still arrive.
      const fits = why === 'Future' || transactions.length > 1
      if (fits && tried < MAX_TRIES) {
        collator.next.push({ extrinsic, tries: tried, why })
        console.log(`collator: an extrinsic refused (${why}) waits for the next block (try ${tried})`)
      } else {
        console.log(`collator: an extrinsic refused (${why}) is dropped after ${tried} block(s)`)
      }
    }
    // One whose application threw (not refused: a trap in the runtime, an executor error) is
    // put back into the pool by chopsticks itself. A build that included nothing and saw
    // nothing arrive must not be followed by another at once (review REVIEW1 F2: it would
    // build the same empty block for ever): what is left waits for the next submission or
    // dev_newBlock, as in chopsticks' own Manual mode. The answer is this build's own (builds
    // of dev_newBlock and of the loop below can overlap: no flag shared between them).
    const built = new Set(transactions)
    const pooled = this.pendingExtrinsics
    const thrown = pooled.filter((extrinsic) => built.has(extrinsic)).length
    const arrived = pooled.length > thrown
    const again = transactions.length - refused - thrown > 0 || arrived
    if (again && collator.next.length > 0 && this.mode === 'Manual') collate(this)
    return again
  }

  function collate(pool) {
    const collator = collatorOf(pool)
    if (collator.building) return
    collator.building = true
    ;(async () => {
      try {
        while (collator.next.length + pool.pendingExtrinsics.length > 0) {
          if (!(await pool.buildBlock())) break
        }
      } finally {
        collator.building = false
      }
    })().catch((error) => {
      console.error(`collator: building a block failed: ${error && error.stack ? error.stack : error}`)
    })
  }

  const submitExtrinsic = TxPool.prototype.submitExtrinsic
  TxPool.prototype.submitExtrinsic = async function (extrinsic) {
    await submitExtrinsic.call(this, extrinsic)
    if (this.mode === 'Manual') collate(this)
  }
}

// Node hands --require to worker threads too (chopsticks runs the runtime in one): the pool
// lives in the main thread only.
if (isMainThread) install(chopsticksTxPool())
