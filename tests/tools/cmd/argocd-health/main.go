// Command argocd-health runs an Argo CD resource health script (health.lua) the
// way Argo CD does: in gopher-lua, with the object as the global table `obj`,
// expecting a table {status = ..., message = ...} back.
//
//	argocd-health test DIR
//	    runs every case of DIR/health_test.yaml (Argo CD's resource_customizations
//	    layout) against DIR/health.lua, once with the standard libraries closed (how
//	    Argo CD runs a script from argocd-cm by default) and once open (how it runs
//	    its built-in scripts); prints a line per case and exits 1 on any mismatch.
//	argocd-health eval [-open-libs] SCRIPT [FILE|-]...
//	    prints one JSON line {"status": ..., "message": ...} per object (YAML or
//	    JSON, e.g. `kubectl get -o json`); `-` or no file reads stdin.
//
// What Argo CD does and this mirrors: libraries package, base and table are always
// opened (Argo CD adds a reduced `os` with only time functions, left out here: a
// script that needs it fails); the script gets one second; a table whose status is
// not one of Argo CD's health codes becomes Unknown. Objects from files are decoded
// as Argo CD's own tests decode them (YAML through JSON: numbers are float64);
// objects on stdin as its controller sees them (Kubernetes' unstructured JSON:
// integers are int64). Lua sees a number either way.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// Health is what a health script returns, as Argo CD reads it.
type Health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// The codes Argo CD accepts from a script.
var validStatus = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true,
	"Healthy": true, "Degraded": true, "Missing": true,
}

const invalidStatusMessage = "Lua returned an invalid health status"

// evaluate runs script with obj as `obj` and returns the health it computes.
func evaluate(script string, obj map[string]any, openLibs bool) (Health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: !openLibs})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return Health{}, fmt.Errorf("opening the %s library: %w", lib.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return Health{}, err
	}
	ret := l.Get(-1)
	table, ok := ret.(*lua.LTable)
	if !ok {
		return Health{}, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	var h Health
	for field, dst := range map[string]*string{"status": &h.Status, "message": &h.Message} {
		switch v := table.RawGetString(field).(type) {
		case lua.LString:
			*dst = string(v)
		case *lua.LNilType:
		default:
			return Health{}, fmt.Errorf("the script returned a %s as %s, not a string", v.Type(), field)
		}
	}
	if !validStatus[h.Status] {
		return Health{Status: "Unknown", Message: invalidStatusMessage}, nil
	}
	return h, nil
}

// toLua converts a decoded Kubernetes object to Lua values, as Argo CD does.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for k, item := range v {
			t.RawSetH(lua.LString(k), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

// fromFile decodes a YAML or JSON object the way Argo CD's health tests do.
func fromFile(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	obj := map[string]any{}
	if err := yaml.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return obj, nil
}

// fromLive decodes an object the way Argo CD's controller holds it.
func fromLive(data []byte) (map[string]any, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	var u unstructured.Unstructured
	if err := u.UnmarshalJSON(js); err != nil {
		return nil, err
	}
	return u.Object, nil
}

type testFile struct {
	Tests []struct {
		InputPath    string `json:"inputPath"`
		HealthStatus Health `json:"healthStatus"`
	} `json:"tests"`
}

func runTests(dir string) error {
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		return err
	}
	var tf testFile
	if err := yaml.UnmarshalStrict(raw, &tf); err != nil {
		return fmt.Errorf("health_test.yaml: %w", err)
	}
	if len(tf.Tests) == 0 {
		return errors.New("health_test.yaml has no tests")
	}
	ok, wrong := 0, 0
	for _, tc := range tf.Tests {
		obj, err := fromFile(filepath.Join(dir, tc.InputPath))
		if err != nil {
			return err
		}
		for _, open := range []bool{false, true} {
			mode := "closed-libs"
			if open {
				mode = "open-libs"
			}
			got, err := evaluate(string(script), obj, open)
			switch {
			case err != nil:
				wrong++
				fmt.Printf("FAIL %s %s: the script failed: %v\n", tc.InputPath, mode, err)
			case got != tc.HealthStatus:
				wrong++
				fmt.Printf("FAIL %s %s:\n  got  %+v\n  want %+v\n", tc.InputPath, mode, got, tc.HealthStatus)
			default:
				ok++
				fmt.Printf("ok   %s %s: %s\n", tc.InputPath, mode, got.Status)
			}
		}
	}
	fmt.Printf("health cases: %d as expected, %d not\n", ok, wrong)
	if wrong > 0 {
		return fmt.Errorf("%d of %d health cases differ", wrong, ok+wrong)
	}
	return nil
}

func runEval(args []string) error {
	fs := flag.NewFlagSet("eval", flag.ExitOnError)
	openLibs := fs.Bool("open-libs", false, "open Lua's standard libraries, as for Argo CD's built-in scripts")
	_ = fs.Parse(args)
	if fs.NArg() < 1 {
		return errors.New("usage: argocd-health eval [-open-libs] SCRIPT [FILE|-]...")
	}
	script, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	inputs := fs.Args()[1:]
	if len(inputs) == 0 {
		inputs = []string{"-"}
	}
	out := json.NewEncoder(os.Stdout)
	for _, in := range inputs {
		var obj map[string]any
		if in == "-" {
			data, err := io.ReadAll(os.Stdin)
			if err != nil {
				return err
			}
			obj, err = fromLive(data)
			if err != nil {
				return fmt.Errorf("stdin: %w", err)
			}
		} else if obj, err = fromFile(in); err != nil {
			return err
		}
		h, err := evaluate(string(script), obj, *openLibs)
		if err != nil {
			return fmt.Errorf("%s: %w", in, err)
		}
		if err := out.Encode(h); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	var err error
	switch {
	case len(os.Args) == 3 && os.Args[1] == "test":
		err = runTests(os.Args[2])
	case len(os.Args) >= 2 && os.Args[1] == "eval":
		err = runEval(os.Args[2:])
	default:
		err = errors.New("usage: argocd-health test DIR | argocd-health eval [-open-libs] SCRIPT [FILE|-]...")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "argocd-health:", err)
		os.Exit(1)
	}
}
