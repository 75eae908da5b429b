"""The engine's own command handlers: membership, assets, moves, holds, pledges, freezes, config.

Each handler takes (state, command, authority) and gives a result code;
it writes only through `engine.state.State`, so a refused command's
changes roll back. `ENGINE_HANDLERS` maps each engine command type to its
handler (`Tick` is run by the machine itself). Holds and encumbrances whose
names begin with a protocol's reserved prefix (`Protocol.reserved_prefixes`)
belong to that protocol: the engine's `Hold`, `Release`, `Encumber` and
`Unencumber` refuse them as `unauthorized`.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from . import codes as C
from .hotpath import _move_unfrozen
from .identity import certificate_key, certificate_not_after, valid_id
from .protocol import Handler
from .records import (
    ENGINE_COMMANDS,
    ROLE_AUDITOR,
    ROLE_COMPLIANCE,
    ROLE_ISSUER,
    ROLE_OPERATOR,
    ROLES,
    STATUS_ACTIVE,
    STATUS_REMOVED,
    STATUS_SUSPENDED,
    Admit,
    Burn,
    Command,
    Encumber,
    Freeze,
    Hold,
    Mint,
    Move,
    Participant,
    RegisterAsset,
    Reinstate,
    Release,
    Remove,
    SetConfig,
    SetRoles,
    Suspend,
    Tick,
    Unencumber,
    Unfreeze,
)
from .state import ENGINE, State, Timer

DECIMALS_MAX = 18
AMOUNT_MAX = (1 << 63) - 1  # an asset's whole supply must stay encodable (and so every balance)
PUBLIC_KEY_BYTES = 32
# Engine notices (`State.notify(topic, participant)`, seen by `Protocol.on_notice`): a block on a party lifted.
NOTICE_UNFROZEN = "unfrozen"
NOTICE_REINSTATED = "reinstated"


def _is_operator(state: State, auth: tuple[str, ...] | None) -> bool:
    return auth is None or state.genesis.operator in auth


def _roles_ok(roles: Sequence[str]) -> bool:
    """Known roles, no repeats, never the operator's; the auditor role stands alone (it only reads)."""
    if ROLE_AUDITOR in roles and len(roles) > 1:
        return False
    return all(r in ROLES and r != ROLE_OPERATOR for r in roles) and len(set(roles)) == len(roles)


def _admit(state: State, cmd: Admit, auth) -> int:
    if not _is_operator(state, auth):
        return C.UNAUTHORIZED
    if cmd.participant in state.participants:
        return C.PARTICIPANT_EXISTS
    if not valid_id(cmd.participant) or not _roles_ok(cmd.roles):
        return C.INVALID_FIELD
    if bool(cmd.public_key) == bool(cmd.certificate):
        return C.INVALID_FIELD
    key = cmd.public_key
    if cmd.certificate:
        key = certificate_key(cmd.certificate, state.genesis.operator_key, cmd.participant, state.now)
        if key is None:
            return C.BAD_CERTIFICATE
    elif len(key) != PUBLIC_KEY_BYTES:
        return C.INVALID_FIELD
    valid_until = certificate_not_after(cmd.certificate) if cmd.certificate else 0
    state.put(
        state.participants,
        cmd.participant,
        Participant(id=cmd.participant, public_key=key, roles=list(cmd.roles), certificate=cmd.certificate,
                    valid_until=valid_until),
    )
    return C.OK


def _member_change(state: State, auth, participant: str, want: int | None, status: int) -> int:
    if not _is_operator(state, auth):
        return C.UNAUTHORIZED
    p = state.participants.get(participant)
    if p is None:
        return C.UNKNOWN_PARTICIPANT
    if p.status == STATUS_REMOVED or (want is not None and p.status != want):
        return C.PARTICIPANT_INACTIVE
    if participant == state.genesis.operator:
        return C.INVALID_FIELD
    state.put(state.participants, participant, msgspec.structs.replace(p, status=status))
    return C.OK


def _suspend(state: State, cmd: Suspend, auth) -> int:
    return _member_change(state, auth, cmd.participant, STATUS_ACTIVE, STATUS_SUSPENDED)


def _reinstate(state: State, cmd: Reinstate, auth) -> int:
    code = _member_change(state, auth, cmd.participant, STATUS_SUSPENDED, STATUS_ACTIVE)
    if not code:  # protocols retry what the suspension blocked (`Protocol.on_notice`), in this step
        state.notify(NOTICE_REINSTATED, cmd.participant)
    return code


def _remove(state: State, cmd: Remove, auth) -> int:
    return _member_change(state, auth, cmd.participant, None, STATUS_REMOVED)


def _set_roles(state: State, cmd: SetRoles, auth) -> int:
    if not _is_operator(state, auth):
        return C.UNAUTHORIZED
    p = state.participants.get(cmd.participant)
    if p is None:
        return C.UNKNOWN_PARTICIPANT
    if cmd.participant == state.genesis.operator or not _roles_ok(cmd.roles):
        return C.INVALID_FIELD
    state.put(state.participants, cmd.participant, msgspec.structs.replace(p, roles=list(cmd.roles)))
    return C.OK


def _register_asset(state: State, cmd: RegisterAsset, auth) -> int:
    if not _is_operator(state, auth):
        return C.UNAUTHORIZED
    asset = cmd.asset
    code = state.check_party(asset.issuer)
    if code:
        return code
    if asset.id in state.assets:
        return C.ASSET_EXISTS
    if not valid_id(asset.id) or not 0 <= asset.decimals <= DECIMALS_MAX:
        return C.INVALID_FIELD
    if ROLE_ISSUER not in state.participants[asset.issuer].roles:
        return C.INVALID_FIELD
    state.put(state.assets, asset.id, asset)
    state.put(state.balances, asset.id, {})
    state.put(state.supply, asset.id, 0)
    return C.OK


def _issuer_auth(state: State, asset_id: str, auth) -> int:
    asset = state.assets.get(asset_id)
    if asset is None:
        return C.UNKNOWN_ASSET
    if auth is not None and asset.issuer not in auth:
        return C.UNAUTHORIZED
    issuer = state.participants[asset.issuer]
    if issuer.status != STATUS_ACTIVE or ROLE_ISSUER not in issuer.roles:
        return C.UNAUTHORIZED
    return C.OK


def _mint(state: State, cmd: Mint, auth) -> int:
    code = _issuer_auth(state, cmd.asset, auth) or state.check_party(cmd.target)
    if code:
        return code
    if cmd.amount <= 0 or cmd.amount > AMOUNT_MAX - state.supply[cmd.asset]:
        return C.INVALID_AMOUNT
    if state.frozen and state.is_frozen(cmd.target, cmd.asset):
        return C.ACCOUNT_FROZEN
    state.mint(cmd.asset, cmd.target, cmd.amount)
    return C.OK


def _burn(state: State, cmd: Burn, auth) -> int:
    code = _issuer_auth(state, cmd.asset, auth)
    if code:
        return code
    if cmd.amount <= 0:
        return C.INVALID_AMOUNT
    return state.burn(cmd.asset, state.assets[cmd.asset].issuer, cmd.amount)


def _move(state: State, cmd: Move, auth) -> int:
    """Move an amount between two accounts, with the source's authority."""
    if state.frozen and (state.is_frozen(cmd.source, cmd.asset) or state.is_frozen(cmd.target, cmd.asset)):
        # every lower code first, as `_move_unfrozen` checks them; then the freeze, which outranks the rest
        return state.check_payment(auth, cmd.source, cmd.target, cmd.asset, cmd.amount) or C.ACCOUNT_FROZEN
    code = _move_unfrozen(cmd, auth, state.participants, state.balances, state.encumbered, state.undo)
    if not code:  # note the credit to a watched account, as the hot path in `_run` does
        watched = state.watch.get(cmd.asset)
        if watched and cmd.target in watched:
            state.rose.append((cmd.asset, cmd.target))
    return code


def _hold(state: State, cmd: Hold, auth) -> int:
    code = state.check_payment(auth, cmd.owner, cmd.beneficiary, cmd.asset, cmd.amount)
    if code:
        return code
    if (cmd.expires_at and cmd.expires_at <= state.now) or cmd.id in state.holds:
        return C.INVALID_FIELD  # a hold id taken (by a protocol's hold) is checked here, before the freeze
    if state.frozen and state.is_frozen(cmd.owner, cmd.asset):
        return C.ACCOUNT_FROZEN
    return state.hold(cmd.id, cmd.asset, cmd.owner, cmd.beneficiary, cmd.amount, cmd.expires_at)


def release_checked(state: State, hold_id: str, to_beneficiary: bool) -> int:
    """Pay a hold out, as the engine's `Release` does: never to an unknown, inactive (suspended, removed) or
    frozen party. Protocols that release their own holds (an HTLC claim or refund) use this rule too."""
    record = state.holds.get(hold_id)
    if record is None:
        return C.UNKNOWN_HOLD
    target = record.beneficiary if to_beneficiary else record.owner
    code = state.check_party(target)
    if code:
        return code
    if state.frozen and state.is_frozen(target, record.asset):
        return C.ACCOUNT_FROZEN
    return state.release(hold_id, to_beneficiary)


def _release(state: State, cmd: Release, auth) -> int:
    record = state.holds.get(cmd.hold)
    if record is None:
        return C.UNKNOWN_HOLD
    to_beneficiary = cmd.to == "beneficiary"
    if auth is not None:
        if to_beneficiary and record.owner not in auth:
            return C.UNAUTHORIZED
        expired = record.expires_at and state.now >= record.expires_at
        if not to_beneficiary and record.beneficiary not in auth and not expired:
            return C.HOLD_NOT_RELEASABLE
    return release_checked(state, cmd.hold, to_beneficiary)


def _encumber(state: State, cmd: Encumber, auth) -> int:
    code = state.check_payment(auth, cmd.owner, cmd.beneficiary, cmd.asset, cmd.amount)
    if code:
        return code
    return state.encumber(cmd.id, cmd.asset, cmd.owner, cmd.beneficiary, cmd.amount)


def _unencumber(state: State, cmd: Unencumber, auth) -> int:
    record = state.encumbrances.get(cmd.encumbrance)
    if record is None:
        return C.UNKNOWN_ENCUMBRANCE
    if auth is not None and record.beneficiary not in auth:
        return C.UNAUTHORIZED
    return state.unencumber(cmd.encumbrance)


def _freeze_change(state: State, auth, participant: str, asset: str, on: bool) -> int:
    if not state.has_role(auth, ROLE_COMPLIANCE):
        return C.UNAUTHORIZED
    if participant not in state.participants:
        return C.UNKNOWN_PARTICIPANT
    if asset != "*" and asset not in state.assets:
        return C.UNKNOWN_ASSET
    marks = state.frozen.get(participant)
    if on:
        if marks is None:
            marks = {}
            state.put(state.frozen, participant, marks)
        state.put(marks, asset, True)
        return C.OK
    if not marks or asset not in marks:
        return C.INVALID_FIELD
    state.pop(marks, asset)
    if not marks:
        state.pop(state.frozen, participant)
    state.notify(NOTICE_UNFROZEN, participant)  # protocols retry what the freeze blocked, in this step
    return C.OK


def _freeze(state: State, cmd: Freeze, auth) -> int:
    return _freeze_change(state, auth, cmd.participant, cmd.asset, True)


def _unfreeze(state: State, cmd: Unfreeze, auth) -> int:
    return _freeze_change(state, auth, cmd.participant, cmd.asset, False)


def _set_config(state: State, cmd: SetConfig, auth) -> int:
    if not _is_operator(state, auth):
        return C.UNAUTHORIZED
    if not valid_id(cmd.key):
        return C.INVALID_FIELD
    state.put(state.config, cmd.key, cmd.value)
    return C.OK


ENGINE_HANDLERS: dict[type[Command], Handler] = {
    Admit: _admit,
    Suspend: _suspend,
    Reinstate: _reinstate,
    Remove: _remove,
    SetRoles: _set_roles,
    RegisterAsset: _register_asset,
    Mint: _mint,
    Burn: _burn,
    Move: _move,
    Hold: _hold,
    Release: _release,
    Encumber: _encumber,
    Unencumber: _unencumber,
    Freeze: _freeze,
    Unfreeze: _unfreeze,
    SetConfig: _set_config,
}
assert set(ENGINE_HANDLERS) | {Tick} == set(ENGINE_COMMANDS)  # Tick is run by the machine itself
# The field of each engine command that names a hold or an encumbrance (the commands that reach protocols' escrow).
ESCROW_NAME_FIELDS: dict[type[Command], str] = {Hold: "id", Release: "hold", Encumber: "id", Unencumber: "encumbrance"}


def reserving(handlers: dict[type[Command], Handler], prefixes: tuple[str, ...]) -> dict[type[Command], Handler]:
    """Wrap the escrow commands' handlers so a name under a protocol's reserved prefix is refused as
    `unauthorized`, whoever signs (the operator too): that protocol alone creates and releases it."""
    out = dict(handlers)  # a copy always: the machine adds its own handlers to it
    if not prefixes:
        return out
    for kind, field in ESCROW_NAME_FIELDS.items():
        out[kind] = _reserved(handlers[kind], field, prefixes)
    return out


def _reserved(handler: Handler, field: str, prefixes: tuple[str, ...]) -> Handler:
    def guarded(state: State, cmd, auth) -> int:
        if getattr(cmd, field).startswith(prefixes):
            return C.UNAUTHORIZED
        return handler(state, cmd, auth)

    guarded.__name__ = handler.__name__
    return guarded


def _engine_due(state: State, timer: Timer) -> int:
    """Return an expired hold to its owner (the hold's release condition)."""
    if timer.kind == "hold_expiry" and timer.ref in state.holds:
        state.emit(ENGINE, "hold_expired", timer.ref)
        return state.release(timer.ref, False)
    return C.OK

