/* The kanban board of a pipeline (templates/pipelines/board.html).
 *
 * Each column's list of cards is a SortableJS list; all share one group, so a card can be
 * dragged from any stage to any other, forward or back. On drop the move is posted to the API
 * (POST /api/v1/pipelines/records/{type}/{id}/move, with the card's version) and:
 *   - on success the card is fetched again as the board draws it (new version, time in stage)
 *     and put first in its new column; the counts and sums of both columns follow;
 *   - on 409 (someone else changed the record) the card is fetched again and shown where the
 *     record is now, and the board says so;
 *   - on "Confirmation needed" (a warn gate) the user is asked, and the move is sent again
 *     with confirm: true, or undone;
 *   - on 202 with pending_approval (an approve gate) the record was submitted for approval
 *     and stays where it is: the card is fetched again, back in its column with a badge;
 *   - on any other refusal the card goes back where it was and the message is shown.
 * Without JavaScript every card has a "Move to" form that does the same through the page.
 */
(function () {
  "use strict";

  const board = document.getElementById("board");
  if (!board || !board.dataset.canMove || typeof Sortable === "undefined") {
    return;
  }
  const objectType = board.dataset.objectType;
  const status = document.getElementById("board-status");
  const text = board.dataset;

  function say(message, kind) {
    status.textContent = message;
    status.className = "board-status message " + (kind || "");
    status.hidden = false;
  }

  function moveUrl(id) {
    return text.moveUrl.replace("OBJECT_TYPE", objectType).replace("/ID/", "/" + id + "/");
  }

  function cardUrl(id) {
    const back = encodeURIComponent(window.location.pathname + window.location.search);
    return (
      text.cardUrl.replace("OBJECT_TYPE", objectType).replace("/1/card/", "/" + id + "/card/") +
      "?next=" +
      back
    );
  }

  function columnOf(stageId) {
    return board.querySelector('.board-column[data-stage-id="' + stageId + '"]');
  }

  // Amounts are added up as whole minor units (BigInt), never as floating point.
  function formatMinor(minor, digits, currency) {
    const negative = minor < 0n;
    const digitsText = (negative ? -minor : minor).toString().padStart(digits + 1, "0");
    const whole = digitsText.slice(0, digitsText.length - digits);
    const fraction = digits ? "." + digitsText.slice(digitsText.length - digits) : "";
    const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return (negative ? "-" : "") + grouped + fraction + " " + currency;
  }

  // Count a card in (sign 1) or out of (sign -1) a column's count and sums.
  function tally(column, card, sign) {
    if (!column || !card) {
      return;
    }
    const count = column.querySelector(".board-count");
    const n = parseInt(count.dataset.count, 10) + sign;
    count.dataset.count = String(n);
    count.textContent = String(n);
    const currency = card.dataset.currency;
    const sums = column.querySelector(".board-sums");
    if (!currency || !sums) {
      return;
    }
    let sum = sums.querySelector('.board-sum[data-currency="' + currency + '"]');
    if (!sum) {
      sum = document.createElement("span");
      sum.className = "board-sum";
      sum.dataset.currency = currency;
      sum.dataset.digits = card.dataset.digits;
      sum.dataset.minor = "0";
      sums.appendChild(sum);
      const empty = sums.querySelector(".board-sum-empty");
      if (empty) {
        empty.remove();
      }
    }
    const minor = BigInt(sum.dataset.minor) + BigInt(sign) * BigInt(card.dataset.minor || "0");
    sum.dataset.minor = minor.toString();
    sum.textContent = formatMinor(minor, parseInt(sum.dataset.digits, 10), currency);
    if (minor === 0n && sign < 0) {
      sum.remove();
      if (!sums.querySelector(".board-sum")) {
        const empty = document.createElement("span");
        empty.className = "board-sum-empty subtle";
        empty.textContent = "\u2014";
        sums.appendChild(empty);
      }
    }
  }

  // The card as the board draws it now, put first in the column of the stage it is in.
  async function refresh(card) {
    let response;
    try {
      response = await fetch(cardUrl(card.dataset.id), {
        credentials: "same-origin",
        headers: { "HX-Request": "true" },
      });
    } catch (error) {
      return card;
    }
    if (!response.ok) {
      card.remove(); // no longer in a pipeline, or no longer visible
      return null;
    }
    const template = document.createElement("template");
    template.innerHTML = (await response.text()).trim();
    const fresh = template.content.firstElementChild;
    const column = columnOf(fresh.dataset.stageId);
    card.remove();
    if (!column) {
      return null;
    }
    const list = column.querySelector(".board-cards");
    list.insertBefore(fresh, list.firstElementChild);
    return fresh;
  }

  function problemText(body) {
    const messages = (body.errors || []).map(function (error) {
      return error.message;
    });
    return messages.length ? messages.join(" ") : body.detail || text.textFailed;
  }

  async function send(move, confirm) {
    const card = move.card;
    card.classList.add("is-moving");
    let response;
    let body = {};
    try {
      response = await fetch(moveUrl(card.dataset.id), {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          Accept: "application/json",
          "X-CSRFToken": text.csrf,
        },
        body: JSON.stringify({
          stage_id: parseInt(move.target.dataset.stageId, 10),
          version: parseInt(card.dataset.version, 10),
          confirm: confirm,
        }),
      });
      body = await response.json().catch(function () {
        return {};
      });
    } catch (error) {
      undo(move);
      say(text.textFailed, "error");
      return;
    } finally {
      card.classList.remove("is-moving");
    }
    const pending = response.ok ? body.pending_approval : null;
    if (pending && pending.status !== "approved") {
      // Not moved (yet): counted out of the target, in again where the record still is.
      tally(move.target, card, -1);
      const fresh = await refresh(card);
      if (fresh) {
        tally(fresh.closest(".board-column"), fresh, 1);
      }
      say(pending.message || text.textPending, pending.status === "pending" ? "" : "warning");
      return;
    }
    if (response.ok) {
      await refresh(card);
      const stageName = move.target.dataset.stageName;
      const notes = (body.warnings || []).join(" ");
      say(text.textMoved.replace("__STAGE__", stageName) + (notes ? " " + notes : ""), "success");
      return;
    }
    if (response.status === 409) {
      // Counted out of where it was; counted in again wherever it is now.
      tally(move.target, card, -1);
      const fresh = await refresh(card);
      if (fresh) {
        tally(fresh.closest(".board-column"), fresh, 1);
      }
      say(text.textStale, "warning");
      return;
    }
    if (response.status === 422 && body.title === "Confirmation needed") {
      if (window.confirm(body.detail)) {
        await send(move, true);
      } else {
        undo(move);
        say(text.textCancelled, "");
      }
      return;
    }
    undo(move);
    say(problemText(body), "error");
  }

  function undo(move) {
    tally(move.target, move.card, -1);
    tally(move.origin, move.card, 1);
    // Back in its place among the cards of the column it came from.
    const cards = move.from.querySelectorAll(":scope > .board-card");
    const before = cards[move.index] || move.from.querySelector(":scope > .board-more");
    move.from.insertBefore(move.card, before || null);
  }

  function dropped(event) {
    if (event.from === event.to) {
      return;
    }
    const move = {
      card: event.item,
      from: event.from,
      index: event.oldDraggableIndex,
      origin: event.from.closest(".board-column"),
      target: event.to.closest(".board-column"),
    };
    // Counted at once where it was dropped; undone if the move is refused.
    tally(move.origin, move.card, -1);
    tally(move.target, move.card, 1);
    send(move, false);
  }

  board.querySelectorAll(".board-cards").forEach(function (list) {
    Sortable.create(list, {
      group: "board",
      sort: false,
      draggable: ".board-card",
      filter: "a, select, button, summary, input, .is-moving",
      preventOnFilter: false,
      forceFallback: true,
      fallbackTolerance: 4,
      animation: 120,
      ghostClass: "is-ghost",
      chosenClass: "is-chosen",
      onEnd: dropped,
    });
  });
})();
