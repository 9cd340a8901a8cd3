"""Meeting scheduling (RFC 6638) with the Python caldav library as every
user's client: an organizer invites a colleague, who finds the invitation
in their calendar and scheduling inbox and accepts it; the answer reaches
the organizer's copy; a room accepts a free slot and declines a taken one;
colleagues' free/busy time comes from the scheduling outbox; deleting a
meeting cancels it for the attendees."""

import re
import uuid
from datetime import datetime, timedelta, timezone

import caldav

# The demo certificate names "localhost", and the library checks host names.
URL = "https://localhost:8443/"


def client(quickstart, user):
    return caldav.DAVClient(url=URL, username=user, password=quickstart.credentials()[user],
                            ssl_verify_cert=str(quickstart.cert), timeout=30)


def meeting(uid, organizer, attendees, start, hours=1, summary="Planning"):
    lines = [
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//test//scheduling//EN", "BEGIN:VEVENT",
        f"UID:{uid}", "DTSTAMP:20300101T000000Z",
        f"DTSTART:{start:%Y%m%dT%H%M%SZ}", f"DTEND:{start + timedelta(hours=hours):%Y%m%dT%H%M%SZ}",
        f"SUMMARY:{summary}", f"ORGANIZER;CN=Organizer:mailto:{organizer}",
        f"ATTENDEE;PARTSTAT=ACCEPTED;ROLE=CHAIR:mailto:{organizer}",
    ]
    for a, cutype in attendees:
        lines.append(f"ATTENDEE;CUTYPE={cutype};PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{a}")
    lines += ["END:VEVENT", "END:VCALENDAR"]
    return "\r\n".join(lines) + "\r\n"


def default_calendar(dav):
    calendars = dav.principal().calendars()
    names = [c.url.path for c in calendars]
    assert not any(n.endswith("/inbox/") for n in names), names
    return next(c for c in calendars if c.url.path.endswith("/default/"))


def unfold(data):
    return data.replace("\r\n", "\n").replace("\n ", "")


def partstat(data, address):
    for line in unfold(data).splitlines():
        if line.startswith("ATTENDEE") and line.lower().endswith(f"mailto:{address}"):
            found = re.search(r";PARTSTAT=([^;:]+)", line)
            return found.group(1) if found else None
    return None


START = datetime(2030, 3, 4, 9, 0, tzinfo=timezone.utc)


def test_colleague_receives_accepts_and_organizer_sees_it(quickstart):
    alice, bob = client(quickstart, "alice@example.test"), client(quickstart, "bob@example.test")
    uid = f"planning-{uuid.uuid4()}"
    default_calendar(alice).save_event(meeting(uid, "alice@example.test", [("bob@example.test", "INDIVIDUAL")], START))

    # The invitation is in bob's calendar and in his scheduling inbox.
    bobs = default_calendar(bob).event_by_uid(uid)
    assert partstat(bobs.data, "bob@example.test") == "NEEDS-ACTION"
    inbox = bob.principal().schedule_inbox()
    invites = [i for i in inbox.get_items() if uid in i.data]
    assert invites and invites[0].is_invite_request()

    # Bob accepts in his copy, as clients do on auto-scheduling servers.
    bobs.change_attendee_status(attendee="mailto:bob@example.test", partstat="ACCEPTED")
    bobs.save(increase_seqno=False)

    organizers = default_calendar(alice).event_by_uid(uid)
    assert partstat(organizers.data, "bob@example.test") == "ACCEPTED"
    assert "SCHEDULE-STATUS=1.2" in unfold(organizers.data)
    # The reply also lands in alice's inbox.
    replies = [i for i in alice.principal().schedule_inbox().get_items() if uid in i.data]
    assert any("METHOD:REPLY" in r.data for r in replies)

    # A later update by the organizer keeps bob's answer.
    default_calendar(alice).save_event(
        meeting(uid, "alice@example.test", [("bob@example.test", "INDIVIDUAL")], START, summary="Planning (moved)"))
    bobs = default_calendar(bob).event_by_uid(uid)
    assert "Planning (moved)" in bobs.data
    assert partstat(bobs.data, "bob@example.test") == "ACCEPTED"

    # Deleting the meeting cancels it in bob's calendar.
    default_calendar(alice).event_by_uid(uid).delete()
    assert "STATUS:CANCELLED" in default_calendar(bob).event_by_uid(uid).data


def test_room_accepts_when_free_and_declines_when_taken(quickstart):
    quickstart.admin("resource", "add", "--kind", "room", "boardroom@example.test")
    alice, bob = client(quickstart, "alice@example.test"), client(quickstart, "bob@example.test")
    first, second = f"room-a-{uuid.uuid4()}", f"room-b-{uuid.uuid4()}"
    room = [("boardroom@example.test", "ROOM")]
    default_calendar(alice).save_event(meeting(first, "alice@example.test", room, START))
    assert partstat(default_calendar(alice).event_by_uid(first).data, "boardroom@example.test") == "ACCEPTED"

    # Bob wants the room for an overlapping slot: declined.
    default_calendar(bob).save_event(meeting(second, "bob@example.test", room, START + timedelta(minutes=30)))
    assert partstat(default_calendar(bob).event_by_uid(second).data, "boardroom@example.test") == "DECLINED"

    # Once alice cancels, the slot is free and bob's next request is accepted.
    default_calendar(alice).event_by_uid(first).delete()
    default_calendar(bob).save_event(
        meeting(second, "bob@example.test", room, START + timedelta(minutes=30), summary="Retry"))
    assert partstat(default_calendar(bob).event_by_uid(second).data, "boardroom@example.test") == "ACCEPTED"


def test_free_busy_of_colleagues_through_the_outbox(quickstart):
    alice, bob = client(quickstart, "alice@example.test"), client(quickstart, "bob@example.test")
    uid = f"busy-{uuid.uuid4()}"
    day = datetime(2030, 5, 6, tzinfo=timezone.utc)
    default_calendar(bob).save_event(meeting(uid, "bob@example.test", [], day + timedelta(hours=14), hours=2))

    answers = alice.principal().freebusy_request(day, day + timedelta(days=1), ["mailto:bob@example.test"])
    text = unfold(answers["mailto:bob@example.test"].data)
    assert "FREEBUSY;FBTYPE=BUSY:20300506T140000Z/20300506T160000Z" in text, text
    # Nobody outside the domain, and nobody unknown, is looked up.
    answers = alice.principal().freebusy_request(day, day + timedelta(days=1), ["mailto:nobody@example.test"])
    assert "3.7" in str(answers)
    # The per-calendar free-busy-query REPORT agrees.
    fb = default_calendar(bob).freebusy_request(day, day + timedelta(days=1))
    assert "20300506T140000Z" in fb.data


def test_a_known_uid_does_not_let_anyone_overwrite_a_colleagues_event(quickstart):
    """Inviting bob to an event whose UID bob already uses for his own event
    leaves bob's event alone; the organizer's copy says it had no authority."""
    alice, bob = client(quickstart, "alice@example.test"), client(quickstart, "bob@example.test")
    uid = f"private-{uuid.uuid4()}"
    mine = meeting(uid, "bob@example.test", [], START, summary="Doctor").replace(
        "ORGANIZER;CN=Organizer:mailto:bob@example.test\r\n", "")
    default_calendar(bob).save_event(mine)
    default_calendar(alice).save_event(
        meeting(uid, "alice@example.test", [("bob@example.test", "INDIVIDUAL")], START, summary="Hijack"))
    assert "Doctor" in default_calendar(bob).event_by_uid(uid).data
    organizers = unfold(default_calendar(alice).event_by_uid(uid).data)
    line = next(l for l in organizers.splitlines() if "mailto:bob@example.test" in l)
    assert "SCHEDULE-STATUS=3.8" in line, line


def test_inviting_a_group_invites_its_members(quickstart):
    """A distribution group as attendee: each member (through nested groups,
    never the organizer twice) gets the invitation and answers for
    themselves; the organizer's copy lists them with MEMBER."""
    quickstart.admin("group", "add", "team@example.test")
    quickstart.admin("group", "add", "core@example.test")
    quickstart.admin("group", "member-add", "core@example.test", "bob@example.test")
    quickstart.admin("group", "member-add", "team@example.test", "core@example.test")
    quickstart.admin("group", "member-add", "team@example.test", "alice@example.test")
    alice, bob = client(quickstart, "alice@example.test"), client(quickstart, "bob@example.test")
    uid = f"all-hands-{uuid.uuid4()}"
    default_calendar(alice).save_event(
        meeting(uid, "alice@example.test", [("team@example.test", "GROUP")], START, summary="All hands"))
    organizers = unfold(default_calendar(alice).event_by_uid(uid).data)
    bob_line = next(l for l in organizers.splitlines() if l.endswith("mailto:bob@example.test"))
    assert 'MEMBER="mailto:team@example.test"' in bob_line and "SCHEDULE-STATUS=1.2" in bob_line
    assert sum(1 for l in organizers.splitlines() if l.endswith("mailto:alice@example.test")) == 2  # organizer + chair line

    bobs = default_calendar(bob).event_by_uid(uid)
    assert "All hands" in bobs.data
    bobs.change_attendee_status(attendee="mailto:bob@example.test", partstat="TENTATIVE")
    bobs.save(increase_seqno=False)
    assert partstat(default_calendar(alice).event_by_uid(uid).data, "bob@example.test") == "TENTATIVE"
