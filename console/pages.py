"""The reviewer's pages: the queue, one proposal and its actions, the amendment form, history and search."""

from __future__ import annotations

import logging
from typing import Final
from urllib.parse import quote

import grpc
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from chartgate.v1 import gateway_pb2, review_pb2
from console.present import PHASES, REJECTION_LABELS, diff_of, item_view, lifecycle, pretty_json
from console.reviews import ReviewRefused
from console.search import SearchQuery
from console.sessions import Session
from console.web import MAX_ID, Web
from sidecar.review.client import ReviewClient

log: Final = logging.getLogger("chartgate.console")

MAX_FILTER: Final = 64
MAX_REJECT_MESSAGE: Final = 500


class ReviewPages:
    """Every page after sign-in; each reads or decides through the Review API, nothing else."""

    def __init__(self, web: Web) -> None:
        self.web = web

    async def home(self, _: Request) -> Response:
        return RedirectResponse("/queue", 303)

    async def health(self, _: Request) -> Response:
        return PlainTextResponse("ok")

    async def queue(self, request: Request) -> Response:
        """Pending proposals of the reviewer's tenants, split by whether this reviewer may approve."""
        session = self.web.session(request)
        if session is None:
            return self.web.sign_in_redirect(request)
        q = request.query_params
        tier = q.get("tier", "")
        tier = tier if tier in ("approval", "dual_approval") else ""
        tenant = q.get("tenant", "")[:128]
        patient = q.get("patient", "").strip()[:MAX_FILTER]
        resource_type = q.get("resource_type", "").strip()[:MAX_FILTER]
        age = q.get("min_age_minutes", "").strip()
        # ASCII digits only, and few: int() refuses "²" and 5,000-digit strings with an error.
        minutes = int(age) if age.isascii() and age.isdigit() and len(age) <= 5 else 0
        minutes = min(minutes, 60 * 24 * 30)
        filters = {
            "tier": tier,
            "tenant": tenant,
            "patient": patient,
            "resource_type": resource_type,
            "min_age_minutes": str(minutes) if minutes else "",
        }
        try:
            items = await self.web.call(
                session,
                lambda c: c.list_pending(
                    tier=tier or None,
                    tenant_id=tenant,
                    patient_id=patient,
                    resource_type=resource_type,
                    min_age_seconds=minutes * 60,
                    limit=200,
                ),
            )
        except ReviewRefused as refusal:
            return self.web.refused(request, session, refusal)
        now = self.web.now()
        views = [item_view(i, session.reviewer, now) for i in items]
        return self.web.page(
            "queue.html",
            session,
            mine=[v for v in views if v.may_approve],
            others=[v for v in views if not v.may_approve],
            filters=filters,
            filtered=any(filters.values()),
        )

    async def proposal(self, request: Request) -> Response:
        """One proposal: the diff, the evidence and its provenance, the decision, the approvals, the actions."""
        session = self.web.session(request)
        if session is None:
            return self.web.sign_in_redirect(request)
        pid = self.web.proposal_id(request)
        try:
            item = await self.web.call(session, lambda c: c.show(pid))
        except ReviewRefused as refusal:
            return self.web.refused(request, session, refusal, back="/queue")
        return self.proposal_page(session, item)

    def proposal_page(
        self, session: Session, item: review_pb2.ReviewItem, status: int = 200
    ) -> HTMLResponse:
        return self.web.page(
            "proposal.html",
            session,
            status,
            view=item_view(item, session.reviewer, self.web.now()),
            diff=diff_of(item),
            resource=pretty_json(item.resource_json),
        )

    async def approve(self, request: Request) -> Response:
        checked = await self.web.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        pid = self.web.proposal_id(request)
        seen = form.get("payload_sha256", "")[:64]
        if not seen:
            # The approval is of the payload the reviewer looked at, never "whatever it is now".
            return self.web.error(session, 400, "Refused", "The form does not say which payload.")
        try:
            item = await self.web.call(session, lambda c: c.approve(pid, payload_sha256=seen))
        except ReviewRefused as refusal:
            return self.web.refused(request, session, refusal, back=f"/proposals/{quote(pid)}")
        p = item.proposal
        log.info("approved %r by %r", pid, session.reviewer.subject)
        if p.fhir_id:
            session.flash("ok", f"Approved. Written to the chart as {p.resource_type}/{p.fhir_id}.")
        elif p.state == gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL:
            session.flash(
                "ok",
                f"Your approval is recorded ({p.approvals_given} of {p.approvals_required}); "
                "waiting for another reviewer.",
            )
        else:
            state = item_view(item, session.reviewer, self.web.now()).state.replace("_", " ")
            session.flash("info", f"Approved; the proposal is now {state}.")
        return RedirectResponse(f"/proposals/{quote(pid)}", 303)

    async def reject(self, request: Request) -> Response:
        checked = await self.web.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        pid = self.web.proposal_id(request)
        code = form.get("code", "")
        if code not in REJECTION_LABELS:
            return self.web.error(
                session,
                400,
                "Refused",
                "Choose a reason for the rejection.",
                back=f"/proposals/{quote(pid)}",
            )
        message = form.get("message", "")[:MAX_REJECT_MESSAGE]
        try:
            await self.web.call(session, lambda c: c.reject(pid, code, message))
        except ReviewRefused as refusal:
            return self.web.refused(request, session, refusal, back=f"/proposals/{quote(pid)}")
        log.info("rejected %r by %r (%r)", pid, session.reviewer.subject, code)
        session.flash("ok", f"Rejected ({REJECTION_LABELS[code]}). The agent is told the reason.")
        return RedirectResponse(f"/proposals/{quote(pid)}", 303)

    async def amend_form(self, request: Request) -> Response:
        session = self.web.session(request)
        if session is None:
            return self.web.sign_in_redirect(request)
        pid = self.web.proposal_id(request)
        try:
            item = await self.web.call(session, lambda c: c.show(pid))
        except ReviewRefused as refusal:
            return self.web.refused(request, session, refusal, back="/queue")
        return self.amend_page(session, item, pretty_json(item.resource_json))

    def amend_page(
        self,
        session: Session,
        item: review_pb2.ReviewItem,
        text: str,
        status: int = 200,
        refusal: ReviewRefused | None = None,
    ) -> HTMLResponse:
        return self.web.page(
            "amend.html",
            session,
            status,
            view=item_view(item, session.reviewer, self.web.now()),
            text=text,
            refusal=refusal,
        )

    async def amend(self, request: Request) -> Response:
        """Re-submit the reviewer's edit through the Review API; show the amendment, re-decided."""
        checked = await self.web.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        pid = self.web.proposal_id(request)
        text = form.get("resource_json", "")
        try:
            answer = await self.web.call(session, lambda c: c.amend(pid, text))
        except ReviewRefused as refusal:
            if refusal.code != grpc.StatusCode.INVALID_ARGUMENT:
                return self.web.refused(request, session, refusal, back=f"/proposals/{quote(pid)}")
            # The edit did not validate: show why, beside the reviewer's text, to fix and resend.
            try:
                item = await self.web.call(session, lambda c: c.show(pid))
            except ReviewRefused as again:
                return self.web.refused(request, session, again, back="/queue")
            return self.amend_page(session, item, text, 400, refusal)
        amended = item_view(answer.amendment, session.reviewer, self.web.now())
        log.info("amended %r into %r by %r", pid, amended.id, session.reviewer.subject)
        session.flash(
            "ok",
            "Amendment submitted as a new proposal; policy evaluated it again: "
            f"tier {amended.tier_label}, now {amended.state.replace('_', ' ')}.",
        )
        return RedirectResponse(f"/proposals/{quote(amended.id)}", 303)

    async def history(self, request: Request) -> Response:
        """A proposal's lifecycle, phase by phase, from the store (Review.GetHistory)."""
        session = self.web.session(request)
        if session is None:
            return self.web.sign_in_redirect(request)
        pid = self.web.proposal_id(request)

        def read(c: ReviewClient) -> tuple[review_pb2.ReviewItem, list[review_pb2.HistoryEvent]]:
            return c.show(pid), c.history(pid)

        try:
            item, events = await self.web.call(session, read)
        except ReviewRefused as refusal:
            return self.web.refused(request, session, refusal, back="/search")
        steps = [(e, PHASES.get(e.kind, "Other")) for e in events]
        return self.web.page(
            "history.html",
            session,
            view=item_view(item, session.reviewer, self.web.now()),
            steps=steps,
            phases=lifecycle(item, events),
        )

    async def search(self, request: Request) -> Response:
        """Find proposals by patient, encounter, agent or reviewer; or go to one by its id."""
        session = self.web.session(request)
        if session is None:
            return self.web.sign_in_redirect(request)
        q = request.query_params
        pid = q.get("proposal", "").strip()[:MAX_ID]
        if pid:
            return RedirectResponse(f"/proposals/{quote(pid, safe='')}/history", 303)
        query = SearchQuery(
            patient=q.get("patient", "").strip()[:MAX_FILTER],
            encounter=q.get("encounter", "").strip()[:MAX_FILTER],
            agent=q.get("agent", "").strip()[:MAX_FILTER],
            reviewer=q.get("reviewer", "").strip()[:MAX_ID],
        )
        views = None
        scope = ""
        if not query.empty:
            try:
                result = await self.web.call(
                    session, lambda c: self.web.search_source.search(c, query)
                )
            except ReviewRefused as refusal:
                return self.web.refused(request, session, refusal)
            now = self.web.now()
            views = [item_view(i, session.reviewer, now) for i in result.items]
            scope = result.scope
        return self.web.page("search.html", session, query=query, views=views, scope=scope)
