"""The double-entry ledger: accounts, transfers idempotent by id, append-only entries (schema ``ledger``).

Every transfer's postings sum to zero and are applied in one transaction that also updates the
accounts' balance snapshots, with the accounts locked in id order so concurrent transfers
neither deadlock nor overdraw a wallet.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Annotated, Any

from prometheus_client import Counter
from psycopg import AsyncConnection, OperationalError, errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paychaos.platform.services.fingerprints import fingerprint
from paychaos.platform.services.schemas import database_readiness, ensure_schema, transaction
from paychaos.platform.services.serving import (
    TEXT_PATTERN,
    ReplicaContext,
    ServiceParts,
    invalid_identifier,
    invalid_request,
    problem,
)
from paychaos.platform.topology import Topology

FUNDING = "seed:funding"
# The transfer kinds the platform posts (a transfer of another kind is still applied). Each has a
# work_in_flight series from the start, so a fault can wait for one of them in flight.
KINDS = ("reserve", "payment", "refund", "cashback", "seed")


class Posting(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: str = Field(max_length=128, pattern=TEXT_PATTERN)
    amount: StrictInt

    @model_validator(mode="after")
    def _not_zero(self) -> Posting:
        if self.amount == 0:
            raise ValueError("a posting moves money: amount must not be 0")
        return self


class TransferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=TEXT_PATTERN)
    kind: str = Field(max_length=32, pattern=TEXT_PATTERN)
    user_id: str | None = Field(default=None, pattern=TEXT_PATTERN)
    payment_id: str | None = Field(default=None, pattern=TEXT_PATTERN)
    postings: list[Posting] = Field(min_length=2)
    # Transfer ids that must not exist for this one to apply (e.g. a payment's settle and its
    # refund). Race-free when they share an account, since both then lock it before checking.
    excludes: list[Annotated[str, Field(pattern=TEXT_PATTERN)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_a_void(self) -> TransferRequest:
        if self.kind == VOID:  # only POST /v1/voids makes those: a void moves no money
            raise ValueError(f"kind: {VOID!r} is the ledger's own, for a voided id (POST /v1/voids)")
        return self


class VoidRequest(BaseModel):
    """A transfer id to void: claimed with no postings, so that a transfer sent under it later is
    refused. What a caller does with a transfer whose outcome it never learned (its answer was
    lost): either the void claims the id, and the transfer never was and never will be applied,
    or the transfer holds it, and was."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=TEXT_PATTERN)
    user_id: str | None = Field(default=None, pattern=TEXT_PATTERN)
    payment_id: str | None = Field(default=None, pattern=TEXT_PATTERN)


#: The kind (and request hash) of a transfer id claimed by a void: no entries, never applied.
VOID = "void"


#: Transfers in one batch at most: each is a subtransaction of the batch's one transaction, and
#: past 64 of those PostgreSQL's per-backend cache overflows and every backend's snapshots slow.
MAX_BATCH = 48


class TransferBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transfers: list[TransferRequest] = Field(min_length=1, max_length=MAX_BATCH)


@dataclass(frozen=True)
class AccountSpec:
    id: str
    kind: str
    allow_negative: bool


class Refused(Exception):
    """The transfer cannot apply; nothing was written."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def error(self) -> dict[str, Any]:
        """The ``error`` object of the problem document (as :func:`problem` writes it)."""
        return {"code": self.code, "message": self.message, **self.extra}

    def problem(self) -> Response:
        return problem(self.status, self.code, self.message, **self.extra)


def id_reused(transfer_id: str) -> Refused:
    """The id is taken by a transfer with another body: retrying cannot help."""
    return Refused(409, "TRANSFER_ID_REUSED", f"Transfer {transfer_id} exists with a different body.")


def voided(transfer_id: str) -> Refused:
    """The id was voided (POST /v1/voids) before any transfer held it: it never will."""
    return Refused(409, "TRANSFER_VOIDED", f"Transfer {transfer_id} was voided: it can no longer be applied.")


UNBALANCED = "The postings of a transfer must sum to zero."


def unbalanced(t: TransferRequest) -> bool:
    return sum(p.amount for p in t.postings) != 0


def in_flux() -> Response:
    """The id's holder rolled back between our claim and our read of it: rare, and retryable."""
    return problem(503, "TRANSFER_IN_FLUX", "Try again.", headers={"Retry-After": "1"})


def busy() -> Response:
    return problem(503, "LEDGER_BUSY", "The ledger is busy; try again shortly.", headers={"Retry-After": "1"})


def escrow_of(user_id: str) -> str:
    """The account a user's balance payments wait in between reserve and settle."""
    return f"escrow:{user_id}"


def seed_accounts(topology: Topology) -> list[AccountSpec]:
    """Every account the seed creates, from the topology's seed section."""
    seed = topology.seed
    accounts = [AccountSpec(f"wallet:u{i:05d}", "wallet", False) for i in range(1, seed.users + 1)]
    # One escrow per user, not one for all: every balance payment's reserve and settle lock their
    # escrow row, and a single row serialised them all (with the database 30 ms slower, about eight
    # transfers stood waiting for it at any moment and payments took up to 5 s).
    accounts += [AccountSpec(escrow_of(f"u{i:05d}"), "escrow", False) for i in range(1, seed.users + 1)]
    accounts += [AccountSpec(f"merchant:m{i:03d}", "merchant", False) for i in range(1, seed.merchants + 1)]
    accounts += [
        AccountSpec("acquirer:clearing", "clearing", True),
        AccountSpec(f"budget:{topology.campaign.flash.name}", "budget", False),
        AccountSpec(FUNDING, "funding", True),
    ]
    return accounts


def seed_transfers(topology: Topology) -> list[TransferRequest]:
    """The transfers that fund user wallets and the campaign budget from ``seed:funding``."""
    funded = [(f"wallet:u{i:05d}", f"u{i:05d}", topology.seed.user_balance) for i in range(1, topology.seed.users + 1)]
    funded.append((f"budget:{topology.campaign.flash.name}", None, topology.campaign.flash.budget))
    return [
        TransferRequest(
            id=f"seed:{account}",
            kind="seed",
            user_id=user,
            postings=[Posting(account=FUNDING, amount=-amount), Posting(account=account, amount=amount)],
        )
        for account, user, amount in funded
        if amount > 0
    ]


def net_by_account(postings: list[Posting]) -> dict[str, int]:
    net: dict[str, int] = defaultdict(int)
    for p in postings:
        net[p.account] += p.amount
    return dict(net)


def transfer_body(t: TransferRequest) -> dict[str, Any]:
    """What idempotency compares: everything but ``excludes``, a precondition rather than content."""
    return t.model_dump(mode="json", exclude_none=True, exclude={"excludes"})


async def _stored(conn: AsyncConnection[Any], transfer_id: str) -> dict[str, Any] | None:
    """A transfer as stored, with its postings, in one round trip: a replay (a saga sending a
    transfer again after a timeout) costs this besides its claim, and on a slow database each
    round trip counts against the caller's timeout (two of 1.2 s fit the ledger's 3 s; three did not)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT t.id, t.kind, t.user_id, t.payment_id, t.request_hash, t.created_at,"
        " coalesce((SELECT json_agg(json_build_object('account', e.account_id, 'amount', e.amount) ORDER BY e.id)"
        " FROM ledger.entries e WHERE e.transfer_id = t.id), '[]'::json) AS postings"
        " FROM ledger.transfers t WHERE t.id = %s",
        [transfer_id],
    )
    return await cur.fetchone()


def _render(row: dict[str, Any], *, replayed: bool) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "user_id": row["user_id"],
        "payment_id": row["payment_id"],
        "postings": row["postings"],
        "created_at": row["created_at"].isoformat(),
        "replayed": replayed,
    }


#: Refusals ledger.apply_transfer raises as 'paychaos:<CODE>' with the account or transfer as detail.
REFUSALS = {
    "UNKNOWN_ACCOUNT": (404, "No such account: {}.", "account"),
    "TRANSFER_EXCLUDED": (409, "Transfer {} exists, which excludes this one.", "excluded_by"),
    "INSUFFICIENT_FUNDS": (422, "Account {} has insufficient funds.", "account"),
}


def refusal(code: str, culprit: str) -> Refused:
    """The refusal ledger.apply_transfer raised as 'paychaos:<code>', about ``culprit``."""
    status, message, field = REFUSALS[code]
    return Refused(status, code, message.format(culprit), **{field: culprit})


async def apply_transfer(conn: AsyncConnection[Any], t: TransferRequest, request_hash: str) -> dict[str, Any] | None:
    """Apply ``t`` in one statement (ledger.apply_transfer, ledger_schema.sql); None when its id is
    already taken (committed). One round trip instead of seven: a payment sends two or three
    transfers, and each statement of the old transaction cost the ledger a wait and a wake-up."""
    try:
        cur = await conn.execute(
            "SELECT ledger.apply_transfer(%s, %s, %s, %s, %s, %s::text[], %s::bigint[], %s::text[])",
            [t.id, t.kind, t.user_id, t.payment_id, request_hash,
             [p.account for p in t.postings], [p.amount for p in t.postings], t.excludes],
        )
    except errors.RaiseException as exc:
        code = (exc.diag.message_primary or "").removeprefix("paychaos:")
        if code not in REFUSALS:
            raise
        raise refusal(code, exc.diag.message_detail or "") from None
    row = await cur.fetchone()
    created = row[0] if row else None
    if created is None:
        return None
    return {
        "id": t.id,
        "kind": t.kind,
        "user_id": t.user_id,
        "payment_id": t.payment_id,
        "postings": [{"account": p.account, "amount": p.amount} for p in t.postings],
        "created_at": created.isoformat(),
        "replayed": False,
    }


async def void_transfer(conn: AsyncConnection[Any], v: VoidRequest) -> str | None:
    """Claim ``v.id`` for a void: "voided" (by this claim), "void" (by an earlier one), "applied"
    (a transfer holds it), or None when its holder rolled back between the two statements. The
    claim is the transfers table's primary key, the one a transfer claims first: of a void and a
    transfer under one id exactly one wins, whatever their order and however late either comes."""
    cur = await conn.execute(
        "INSERT INTO ledger.transfers (id, kind, user_id, payment_id, request_hash) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        [v.id, VOID, v.user_id, v.payment_id, VOID],
    )
    if await cur.fetchone() is not None:
        return "voided"
    # A statement of its own, so its snapshot sees the holder the claim waited for.
    cur = await conn.execute("SELECT kind FROM ledger.transfers WHERE id = %s", [v.id])
    row = await cur.fetchone()
    if row is None:
        return None
    return "void" if row[0] == VOID else "applied"


async def apply_batch(conn: AsyncConnection[Any], transfers: list[TransferRequest]) -> list[dict[str, Any]]:
    """Apply ``transfers`` in one statement and one transaction (ledger.apply_transfers,
    ledger_schema.sql), each on its own terms: one outcome each, in order, shaped as the single
    transfer's answer would be (``status``, and ``error`` when it did not apply)."""
    hashes = [fingerprint(transfer_body(t)) for t in transfers]
    batch = [{**t.model_dump(mode="json"), "request_hash": h} for t, h in zip(transfers, hashes, strict=True)]
    cur = await conn.execute("SELECT ledger.apply_transfers(%s::jsonb)", [Jsonb(batch)])
    row = await cur.fetchone()
    outcomes: list[dict[str, Any]] = row[0] if row else []
    out = []
    for t, request_hash, outcome in zip(transfers, hashes, outcomes, strict=True):
        if "created_at" in outcome:
            out.append({"id": t.id, "status": 201, "replayed": False})
        elif outcome.get("stored_hash") == request_hash:
            out.append({"id": t.id, "status": 200, "replayed": True})
        elif outcome.get("stored_hash") == VOID:
            out.append({"id": t.id, "status": 409, "error": voided(t.id).error()})
        else:
            refused = refusal(outcome["refused"], outcome.get("detail") or "") if "refused" in outcome else id_reused(t.id)
            out.append({"id": t.id, "status": refused.status, "error": refused.error()})
    return out


def build(ctx: ReplicaContext) -> ServiceParts:
    pool = ctx.db_pool(size=16)
    postings_total = Counter(
        "ledger_postings", "Transfers applied, by kind (replays not counted)", ["service", "zone", "kind"], registry=ctx.registry
    )
    labels = ctx.labels()
    voids_total = Counter(
        "ledger_voids", "Transfer ids voided before any transfer held them (replays not counted)", ["service", "zone"],
        registry=ctx.registry,
    ).labels(**labels)
    in_flight = ctx.work_in_flight("Transfers being applied", KINDS)  # a kill can cut a reserve

    async def startup() -> None:
        await pool.open(wait=True)
        await ensure_schema(pool, "ledger_schema.sql")

    async def create_transfer(request: Request) -> Response:
        try:
            t = TransferRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return invalid_request("The transfer is malformed.", exc)
        if unbalanced(t):
            return problem(422, "UNBALANCED", UNBALANCED)
        request_hash = fingerprint(transfer_body(t))

        async def work(conn: AsyncConnection[Any]) -> dict[str, Any] | None:
            return await apply_transfer(conn, t, request_hash)

        try:
            with in_flight.labels(kind=t.kind, **labels).track_inprogress():
                applied = await transaction(pool, work, one_statement=True)
            if applied is not None:
                postings_total.labels(kind=t.kind, **labels).inc()
                return JSONResponse(applied, status_code=201)
            async with pool.connection() as conn:
                stored = await _stored(conn, t.id)
        except Refused as exc:
            return exc.problem()
        except (PoolTimeout, OperationalError):
            return busy()
        if stored is None:  # the id's owner rolled back between our insert and our read: rare, retryable
            return in_flux()
        if stored["kind"] == VOID:
            return voided(t.id).problem()
        if stored["request_hash"] != request_hash:
            return id_reused(t.id).problem()
        return JSONResponse(_render(stored, replayed=True), status_code=200)

    async def create_transfers(request: Request) -> Response:
        """Up to MAX_BATCH transfers applied together (one transaction, one commit), each answered
        as POST /v1/transfers would answer it: for a caller with many small transfers on one hot
        account, such as the campaign's cashback on its budget."""
        try:
            batch = TransferBatch.model_validate_json(await request.body())
        except ValidationError as exc:
            return invalid_request(f"The batch is malformed (at most {MAX_BATCH} transfers).", exc)
        lopsided = [i for i, t in enumerate(batch.transfers) if unbalanced(t)]
        if lopsided:
            return problem(422, "UNBALANCED", UNBALANCED, field=f"transfers[{lopsided[0]}].postings")
        try:
            with in_flight.labels(kind=batch.transfers[0].kind, **labels).track_inprogress():
                results = await transaction(pool, lambda conn: apply_batch(conn, batch.transfers), one_statement=True)
        except (PoolTimeout, OperationalError):
            return busy()
        for t, result in zip(batch.transfers, results, strict=True):
            if result["status"] == 201:
                postings_total.labels(kind=t.kind, **labels).inc()
        return JSONResponse({"results": results})

    async def create_void(request: Request) -> Response:
        """Void a transfer id: 201 voided now, 200 voided before, 409 TRANSFER_APPLIED when a
        transfer holds it (it was applied, and stays so)."""
        try:
            v = VoidRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return invalid_request("The void is malformed.", exc)
        try:
            async with pool.connection() as conn:
                outcome = await void_transfer(conn, v)
        except (PoolTimeout, OperationalError):
            return busy()
        if outcome is None:
            return in_flux()
        if outcome == "applied":
            return problem(409, "TRANSFER_APPLIED", f"Transfer {v.id} was applied: it cannot be voided.")
        if outcome == "voided":
            voids_total.inc()
        return JSONResponse({"id": v.id, "voided": True, "replayed": outcome == "void"},
                            status_code=201 if outcome == "voided" else 200)

    async def get_transfer(request: Request) -> Response:
        transfer_id = request.path_params["transfer_id"]
        if (invalid := invalid_identifier(transfer_id, "transfer_id", TEXT_PATTERN)) is not None:
            return invalid
        async with pool.connection() as conn:
            stored = await _stored(conn, transfer_id)
        if stored is None:
            return problem(404, "UNKNOWN_TRANSFER", "No such transfer.")
        return JSONResponse(_render(stored, replayed=True))

    async def get_account(request: Request) -> Response:
        account_id = request.path_params["account_id"]
        if (invalid := invalid_identifier(account_id, "account_id", TEXT_PATTERN)) is not None:
            return invalid
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT kind, balance FROM ledger.accounts WHERE id = %s", [account_id])
            row = await cur.fetchone()
        if row is None:
            return problem(404, "UNKNOWN_ACCOUNT", f"No such account: {account_id}.")
        return JSONResponse({"id": account_id, "kind": row[0], "balance": row[1]})

    async def get_wallet(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        if (invalid := invalid_identifier(user_id, "user_id")) is not None:
            return invalid
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT balance FROM ledger.accounts WHERE id = %s", [f"wallet:{user_id}"])
            row = await cur.fetchone()
        if row is None:
            return problem(404, "UNKNOWN_ACCOUNT", f"No wallet for user {user_id}.")
        return JSONResponse({"user_id": user_id, "balance": row[0]})

    async def seed(_: Request) -> Response:
        counts = await transaction(pool, lambda conn: apply_seed(conn, ctx.topology))
        postings_total.labels(kind="seed", **labels).inc(counts["transfers_created"])
        return JSONResponse(counts)

    return ServiceParts(
        routes=[
            Route("/v1/transfers", create_transfer, methods=["POST"]),
            Route("/v1/transfer-batches", create_transfers, methods=["POST"]),
            Route("/v1/voids", create_void, methods=["POST"]),
            Route("/v1/transfers/{transfer_id:path}", get_transfer, methods=["GET"]),
            Route("/v1/accounts/{account_id:path}", get_account, methods=["GET"]),
            Route("/v1/wallets/{user_id}", get_wallet, methods=["GET"]),
            Route("/admin/seed", seed, methods=["POST"]),
        ],
        startup=[startup],
        shutdown=[pool.close],
        ready=database_readiness(pool),
    )


async def apply_seed(conn: AsyncConnection[Any], topology: Topology) -> dict[str, int]:
    """Create the seed accounts and fund them, set-based; running it again changes nothing."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('paychaos:ledger:seed'))")
    accounts = seed_accounts(topology)
    cur = await conn.execute(
        "INSERT INTO ledger.accounts (id, kind, allow_negative)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::boolean[]) ON CONFLICT (id) DO NOTHING",
        [[a.id for a in accounts], [a.kind for a in accounts], [a.allow_negative for a in accounts]],
    )
    accounts_created = cur.rowcount
    transfers = {t.id: t for t in seed_transfers(topology)}
    cur = await conn.execute(
        "INSERT INTO ledger.transfers (id, kind, user_id, request_hash)"
        " SELECT id, 'seed', u, h FROM unnest(%s::text[], %s::text[], %s::text[]) AS t(id, u, h)"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        [list(transfers), [t.user_id for t in transfers.values()], [fingerprint(transfer_body(t)) for t in transfers.values()]],
    )
    created = [transfers[r[0]] for r in await cur.fetchall()]
    if created:
        postings = [(t.id, p.account, p.amount) for t in created for p in t.postings]
        await conn.execute(
            "INSERT INTO ledger.entries (transfer_id, account_id, amount)"
            " SELECT t, a, m FROM unnest(%s::text[], %s::text[], %s::bigint[]) WITH ORDINALITY AS p(t, a, m, n) ORDER BY n",
            [[p[0] for p in postings], [p[1] for p in postings], [p[2] for p in postings]],
        )
        net = net_by_account([p for t in created for p in t.postings])
        ids = sorted(net)
        await conn.execute(
            "UPDATE ledger.accounts AS acc SET balance = acc.balance + d.delta"
            " FROM unnest(%s::text[], %s::bigint[]) AS d(id, delta) WHERE acc.id = d.id",
            [ids, [net[a] for a in ids]],
        )
    return {"accounts": len(accounts), "accounts_created": accounts_created, "transfers_created": len(created)}
