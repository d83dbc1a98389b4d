package store_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/hal9ai/hal9-migrate/store"
)

// TestSavePlansAllOrNone checks that SavePlans keeps every plan given, in
// place of those kept before, and none when one of them cannot be kept;
// and that Versions tells every record's version.
func TestSavePlansAllOrNone(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	kps := []store.KeptPlan{{Plan: "a", File: "plans/a.yaml", Data: []byte("a1")}, {Plan: "b", File: "plans/b.yaml", Data: []byte("b1")}}
	if err := st.SavePlans(ctx, kps); err != nil {
		t.Fatal(err)
	}
	kps[0].Data = []byte("a2")
	if err := st.SavePlans(ctx, append(kps[:1:1], store.KeptPlan{File: "nameless"})); err == nil {
		t.Fatal("a plan with no name was kept")
	}
	if err := st.SavePlans(ctx, kps[:1]); err != nil {
		t.Fatal(err)
	}
	got, err := st.LoadPlans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || string(got[0].Data) != "a2" || string(got[1].Data) != "b1" {
		t.Fatalf("kept %+v", got)
	}

	if _, err := st.Save(ctx, store.Record{Plan: "a"}); err != nil {
		t.Fatal(err)
	}
	v, err := st.Versions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(v) != 1 || v["a"] != 1 {
		t.Fatalf("versions %v", v)
	}
}
