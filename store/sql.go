package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// SQL is the Store over database/sql that both back ends share; a dialect
// holds the little that differs between SQLite and PostgreSQL. Open one with
// Open, OpenSQLite or OpenPostgres.
//
// The schema is two tables. records holds one row per plan: the Record as
// JSON text (so a new field needs no migration), the version Save checks, and
// updated_at for people reading the database. history holds the events, one
// row each, with a sequence number the database assigns.
type SQL struct {
	db *sql.DB
	d  *dialect
}

var _ Store = (*SQL)(nil)

// dialect is what differs between the SQL back ends.
type dialect struct {
	// dollar is true when placeholders are $1, $2, … rather than ?.
	dollar bool
	// autoID is the column definition of an auto-increment primary key.
	autoID string
	// blob and timestamp are the column types of bytes and instants.
	blob, timestamp string
	// lockMigrations, when set, runs first in the migration transaction so
	// that two processes opening one fresh database do not both migrate it.
	lockMigrations string
	// encodeTime turns an instant into what the driver stores in a
	// timestamp column; decodeTime reads it back.
	encodeTime func(time.Time) any
	decodeTime func(any) (time.Time, error)
}

// rebind rewrites the ? placeholders of query for d. Queries in this package
// never hold a ? inside a literal.
func (d *dialect) rebind(query string) string {
	if !d.dollar {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// newSQL migrates db and wraps it; it closes db when it fails.
func newSQL(ctx context.Context, db *sql.DB, d *dialect) (*SQL, error) {
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	s := &SQL{db: db, d: d}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Load implements Store.
func (s *SQL) Load(ctx context.Context, planName string) (Record, error) {
	if planName == "" {
		return Record{}, errors.New("load record: empty plan name")
	}
	var (
		data    string
		version int64
	)
	err := s.db.QueryRowContext(ctx, s.d.rebind(`SELECT data, version FROM records WHERE plan = ?`), planName).
		Scan(&data, &version)
	if errors.Is(err, sql.ErrNoRows) {
		return Record{Plan: planName}, nil
	}
	if err != nil {
		return Record{}, fmt.Errorf("load record of %s: %w", planName, err)
	}
	rec, err := decodeRecord(planName, data, version)
	if err != nil {
		return Record{}, fmt.Errorf("load record of %s: %w", planName, err)
	}
	return rec, nil
}

// LoadAll implements Store.
func (s *SQL) LoadAll(ctx context.Context) ([]Record, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT plan, data, version FROM records`)
	if err != nil {
		return nil, fmt.Errorf("load records: %w", err)
	}
	defer rows.Close()
	var recs []Record
	for rows.Next() {
		var (
			name, data string
			version    int64
		)
		if err := rows.Scan(&name, &data, &version); err != nil {
			return nil, fmt.Errorf("load records: %w", err)
		}
		rec, err := decodeRecord(name, data, version)
		if err != nil {
			return nil, fmt.Errorf("load record of %s: %w", name, err)
		}
		recs = append(recs, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load records: %w", err)
	}
	// Sorted here rather than by ORDER BY: PostgreSQL orders text by the
	// database's collation, which need not be byte order.
	slices.SortFunc(recs, func(a, b Record) int { return strings.Compare(a.Plan, b.Plan) })
	return recs, nil
}

// Versions returns the version of every plan's record, by plan, reading
// nothing else: a caller that keeps what it built of each record reads
// again only those whose version moved (the daemon's status files).
func (s *SQL) Versions(ctx context.Context) (map[string]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT plan, version FROM records`)
	if err != nil {
		return nil, fmt.Errorf("load record versions: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var name string
		var version int64
		if err := rows.Scan(&name, &version); err != nil {
			return nil, fmt.Errorf("load record versions: %w", err)
		}
		out[name] = version
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load record versions: %w", err)
	}
	return out, nil
}

// Save implements Store.
//
// The version check is a conditional write: an UPDATE … WHERE version = old,
// or for version 0 an INSERT … ON CONFLICT DO NOTHING, that must touch one
// row. No other isolation is needed. On PostgreSQL a second writer of the
// same row waits for the first to commit and then re-checks the WHERE
// against the committed row, so it touches none; on SQLite every write
// transaction begins IMMEDIATE, so writers are serialised outright. Either
// way exactly one of two concurrent Saves from one version wins; the other
// gets ErrConflict and writes nothing.
//
// Holding the record's row lock while appending also keeps one plan's event
// sequence numbers in commit order.
func (s *SQL) Save(ctx context.Context, rec Record, events ...Event) (int64, error) {
	if rec.Plan == "" {
		return 0, errors.New("save record: empty plan name")
	}
	if rec.Version < 0 {
		return 0, fmt.Errorf("save record of %s: negative version %d", rec.Plan, rec.Version)
	}
	for i, ev := range events {
		if ev.Plan != "" && ev.Plan != rec.Plan {
			return 0, fmt.Errorf("save record of %s: event %d belongs to plan %s", rec.Plan, i, ev.Plan)
		}
	}
	old := rec.Version
	rec = normalize(rec)
	rec.Version = old + 1
	data, err := json.Marshal(rec)
	if err != nil {
		return 0, fmt.Errorf("save record of %s: %w", rec.Plan, err)
	}
	if err := s.save(ctx, rec.Plan, old, string(data), events); err != nil {
		if errors.Is(err, ErrConflict) {
			return 0, fmt.Errorf("save record of %s at version %d: %w", rec.Plan, old, err)
		}
		return 0, fmt.Errorf("save record of %s: %w", rec.Plan, err)
	}
	return old + 1, nil
}

func (s *SQL) save(ctx context.Context, planName string, old int64, data string, events []Event) (err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	var res sql.Result
	if old == 0 {
		res, err = tx.ExecContext(ctx, s.d.rebind(
			`INSERT INTO records (plan, data, version) VALUES (?, ?, 1) ON CONFLICT (plan) DO NOTHING`),
			planName, data)
	} else {
		res, err = tx.ExecContext(ctx, s.d.rebind(
			`UPDATE records SET data = ?, version = version + 1, updated_at = CURRENT_TIMESTAMP WHERE plan = ? AND version = ?`),
			data, planName, old)
	}
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n != 1 {
		return ErrConflict
	}
	if len(events) > 0 {
		stmt, err := tx.PrepareContext(ctx, s.d.rebind(`INSERT INTO history
			(plan, at, kind, from_phase, from_percentage, to_phase, to_percentage, git_commit, reason, data)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`))
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, ev := range events {
			var evData []byte
			if len(ev.Data) > 0 {
				evData = ev.Data
			}
			if _, err := stmt.ExecContext(ctx, planName, s.d.encodeTime(instant(ev.At)), ev.Kind,
				ev.From.Phase, ev.From.Percentage, ev.To.Phase, ev.To.Percentage,
				ev.Commit, ev.Reason, evData); err != nil {
				return err
			}
		}
	}
	return tx.Commit()
}

// History implements Store.
func (s *SQL) History(ctx context.Context, planName string, limit int) ([]Event, error) {
	const columns = `seq, plan, at, kind, from_phase, from_percentage, to_phase, to_percentage, git_commit, reason, data`
	var (
		rows *sql.Rows
		err  error
	)
	if limit > 0 {
		rows, err = s.db.QueryContext(ctx, s.d.rebind(
			`SELECT `+columns+` FROM history WHERE plan = ? ORDER BY seq DESC LIMIT ?`), planName, limit)
	} else {
		rows, err = s.db.QueryContext(ctx, s.d.rebind(
			`SELECT `+columns+` FROM history WHERE plan = ? ORDER BY seq`), planName)
	}
	if err != nil {
		return nil, fmt.Errorf("load history of %s: %w", planName, err)
	}
	defer rows.Close()
	var events []Event
	for rows.Next() {
		var (
			ev Event
			at any
		)
		if err := rows.Scan(&ev.Seq, &ev.Plan, &at, &ev.Kind, &ev.From.Phase, &ev.From.Percentage,
			&ev.To.Phase, &ev.To.Percentage, &ev.Commit, &ev.Reason, &ev.Data); err != nil {
			return nil, fmt.Errorf("load history of %s: %w", planName, err)
		}
		if ev.At, err = s.d.decodeTime(at); err != nil {
			return nil, fmt.Errorf("load history of %s: event %d: %w", planName, ev.Seq, err)
		}
		if len(ev.Data) == 0 {
			ev.Data = nil
		}
		events = append(events, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load history of %s: %w", planName, err)
	}
	if limit > 0 {
		slices.Reverse(events)
	}
	return events, nil
}

// Close implements Store. Closing twice is harmless.
func (s *SQL) Close() error { return s.db.Close() }

func decodeRecord(planName, data string, version int64) (Record, error) {
	var rec Record
	if err := json.Unmarshal([]byte(data), &rec); err != nil {
		return Record{}, fmt.Errorf("decode version %d: %w", version, err)
	}
	// The columns are the truth; the copies inside the JSON are for people.
	rec.Plan, rec.Version = planName, version
	return rec, nil
}

// instant is t as the store keeps it: in UTC, to the microsecond, the
// precision of a PostgreSQL timestamp. Both back ends store this so that what
// Load returns does not depend on the back end.
func instant(t time.Time) time.Time {
	return t.UTC().Truncate(time.Microsecond)
}

// normalize returns rec with every time an instant. It copies what it
// changes, so the caller's maps and slices stay as they were.
func normalize(rec Record) Record {
	rec.EnteredAt = instant(rec.EnteredAt)
	rec.GreenSince = instant(rec.GreenSince)
	rec.UpdatedAt = instant(rec.UpdatedAt)
	if rec.Failed != nil {
		rec.Failed = slices.Clone(rec.Failed)
		for i := range rec.Failed {
			rec.Failed[i].At = instant(rec.Failed[i].At)
		}
	}
	if rec.Checkpoints != nil {
		rec.Checkpoints = maps.Clone(rec.Checkpoints)
		for name, c := range rec.Checkpoints {
			c.At, c.RestoredAt = instant(c.At), instant(c.RestoredAt)
			rec.Checkpoints[name] = c
		}
	}
	if rec.Job != nil {
		job := *rec.Job
		job.StartedAt = instant(job.StartedAt)
		rec.Job = &job
	}
	if rec.Checks != nil {
		rec.Checks = maps.Clone(rec.Checks)
		for name, c := range rec.Checks {
			c.At = instant(c.At)
			rec.Checks[name] = c
		}
	}
	return rec
}
