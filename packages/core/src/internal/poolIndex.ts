/**
 * The rotation of one pool (SPEC §3.1, §3.3, §3.5): which token to hand out next, in
 * least-recently-used order, without scanning the pool.
 *
 * Tokens in rotation sit in a doubly-linked list in the order they were last handed out, so
 * the head is the least recently used and handing one out moves it to the tail: O(1). (A
 * `Map` used as a queue is not: entries deleted at its front stay behind as holes that every
 * walk to the first entry steps over, which makes each hand-out linear in the pool.) A token that
 * (re-)enters rotation — new, back from a rate limit, valid again — has an older last use
 * than tokens already there, so it waits in a small heap by last use; `acquire` takes
 * whichever of the two fronts was used longest ago. Rate-limited tokens sit in a heap by
 * reset time and return to rotation when `acquire` finds their reset passed: they come back
 * by themselves, with no timer. Heap entries carry the member's version and are skipped when
 * stale, so leaving rotation is O(1) too.
 *
 * The index is plain synchronous code: every operation runs to completion inside one
 * `Effect.sync`, so no fiber ever sees it half-updated.
 */
import { Heap } from "./heap.js"

export type Standing =
  | { readonly _tag: "available" }
  | { readonly _tag: "limited"; readonly until: number }
  | { readonly _tag: "out" }

export interface Member<T> {
  readonly id: string
  /** What `acquire` hands out for this member; kept current by the owner. */
  value: T
  lastUsed: number
  /** Order of last use among members with the same `lastUsed`. */
  stamp: number
  version: number
  standing: Standing
  /** Where the member waits while available: in the rotation list or the returning heap. */
  place: "rotation" | "returning" | "none"
  /** Neighbours in the rotation list, while there. */
  prev: Member<T> | undefined
  next: Member<T> | undefined
}

interface Returning<T> {
  readonly member: Member<T>
  readonly version: number
  readonly lastUsed: number
  readonly stamp: number
}

interface Limited<T> {
  readonly member: Member<T>
  readonly version: number
  readonly until: number
}

export type Acquired<T> =
  | { readonly _tag: "acquired"; readonly member: Member<T> }
  | { readonly _tag: "exhausted"; readonly retryAt: number }
  | { readonly _tag: "none" }

const olderThan = (a: { lastUsed: number; stamp: number }, b: { lastUsed: number; stamp: number }) =>
  a.lastUsed < b.lastUsed || (a.lastUsed === b.lastUsed && a.stamp < b.stamp)

export class PoolIndex<T> {
  private readonly members = new Map<string, Member<T>>()
  private head: Member<T> | undefined = undefined
  private tail: Member<T> | undefined = undefined
  private inRotation = 0
  private readonly returning = new Heap<Returning<T>>(olderThan)
  private readonly limited = new Heap<Limited<T>>((a, b) => a.until < b.until)
  private returningLive = 0
  private limitedLive = 0
  private stamps = 0

  get size(): number {
    return this.members.size
  }

  get(id: string): Member<T> | undefined {
    return this.members.get(id)
  }

  all(): IterableIterator<Member<T>> {
    return this.members.values()
  }

  /**
   * Adds a member or updates its value and standing. `lastUsed` counts only for a new member:
   * afterwards the order of use is the index's own (moving a member in the middle of the
   * rotation would break its order).
   */
  set(id: string, value: T, lastUsed: number, standing: Standing): void {
    let member = this.members.get(id)
    if (member === undefined) {
      member = {
        id,
        value,
        lastUsed,
        stamp: ++this.stamps,
        version: 0,
        standing: { _tag: "out" },
        place: "none",
        prev: undefined,
        next: undefined
      }
      this.members.set(id, member)
    }
    member.value = value
    this.stand(member, standing)
  }

  remove(id: string): void {
    const member = this.members.get(id)
    if (member === undefined) return
    this.leave(member)
    this.members.delete(id)
  }

  /** Changes a member's standing, moving it between rotation, the limit heap and nowhere. */
  stand(member: Member<T>, standing: Standing): void {
    const was = member.standing
    if (was._tag === standing._tag && (was._tag !== "limited" || standing._tag !== "limited" || was.until === standing.until)) {
      return
    }
    this.leave(member)
    member.standing = standing
    if (standing._tag === "available") {
      this.returning.push({ member, version: member.version, lastUsed: member.lastUsed, stamp: member.stamp })
      member.place = "returning"
      this.returningLive++
    } else if (standing._tag === "limited") {
      this.limited.push({ member, version: member.version, until: standing.until })
      this.limitedLive++
    }
  }

  private leave(member: Member<T>): void {
    member.version++
    if (member.standing._tag === "limited") this.limitedLive--
    if (member.place === "rotation") this.unlink(member)
    else if (member.place === "returning") this.returningLive--
    member.place = "none"
    this.compactIfStale()
  }

  private append(member: Member<T>): void {
    member.prev = this.tail
    member.next = undefined
    if (this.tail === undefined) this.head = member
    else this.tail.next = member
    this.tail = member
    member.place = "rotation"
    this.inRotation++
  }

  private unlink(member: Member<T>): void {
    if (member.prev === undefined) this.head = member.next
    else member.prev.next = member.next
    if (member.next === undefined) this.tail = member.prev
    else member.next.prev = member.prev
    member.prev = undefined
    member.next = undefined
    this.inRotation--
  }

  /** Stale heap entries are skipped when they surface; drop them before they pile up. */
  private compactIfStale(): void {
    if (this.returning.size > 2 * this.returningLive + 256) {
      this.returning.compact((entry) => entry.version === entry.member.version)
    }
    if (this.limited.size > 2 * this.limitedLive + 256) {
      this.limited.compact((entry) => entry.version === entry.member.version)
    }
  }

  /** Moves members whose rate limit has reset back into rotation. */
  private release(now: number): void {
    for (let top = this.limited.peek(); top !== undefined && (top.until <= now || top.version !== top.member.version); top = this.limited.peek()) {
      this.limited.pop()
      if (top.version === top.member.version) this.stand(top.member, { _tag: "available" })
    }
  }

  private frontOfReturning(): Returning<T> | undefined {
    for (let top = this.returning.peek(); top !== undefined; top = this.returning.peek()) {
      if (top.version === top.member.version && top.member.place === "returning") return top
      this.returning.pop()
    }
    return undefined
  }

  /**
   * Hands out the least recently used available member, marking it used at `now`. `usable`
   * has the last word on a candidate: a standing other than available (its token expired,
   * say) takes it out of rotation and the next one is tried.
   */
  acquire(now: number, usable: (member: Member<T>) => Standing): Acquired<T> {
    this.release(now)
    for (;;) {
      const waiting = this.frontOfReturning()
      const front = this.head
      let member: Member<T> | undefined
      if (waiting !== undefined && (front === undefined || olderThan(waiting, front))) {
        this.returning.pop()
        this.returningLive--
        member = waiting.member
      } else if (front !== undefined) {
        this.unlink(front)
        member = front
      }
      if (member === undefined) break
      member.place = "none"
      const standing = usable(member)
      if (standing._tag !== "available") {
        member.version++
        member.standing = { _tag: "out" }
        this.stand(member, standing)
        continue
      }
      member.lastUsed = Math.max(now, member.lastUsed)
      member.stamp = ++this.stamps
      this.append(member)
      return { _tag: "acquired", member }
    }
    const earliest = this.earliestReset()
    return earliest === undefined ? { _tag: "none" } : { _tag: "exhausted", retryAt: earliest }
  }

  /** The earliest reset among rate-limited members. */
  earliestReset(): number | undefined {
    for (let top = this.limited.peek(); top !== undefined; top = this.limited.peek()) {
      if (top.version === top.member.version) return top.until
      this.limited.pop()
    }
    return undefined
  }

  /** Members that can be handed out now. */
  countAvailable(now: number): number {
    this.release(now)
    return this.inRotation + this.returningLive
  }

  countLimited(now: number): number {
    this.release(now)
    return this.limitedLive
  }
}
