// Command kstatus prints what the kstatus library (sigs.k8s.io/cli-utils, which
// Flux's health checks and `kpt live status` use) computes for Kubernetes objects:
// one JSON line {"status": "Current"|"InProgress"|"Failed"|..., "message": ...}
// per object.
//
//	kstatus [FILE|-]...
//
// Each input is one object in YAML or JSON (e.g. `kubectl get -o json`); `-` or no
// file reads stdin.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func compute(data []byte) (result, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return result{}, err
	}
	var u unstructured.Unstructured
	if err := u.UnmarshalJSON(js); err != nil {
		return result{}, err
	}
	r, err := status.Compute(&u)
	if err != nil {
		return result{}, err
	}
	return result{Status: r.Status.String(), Message: r.Message}, nil
}

func main() {
	inputs := os.Args[1:]
	if len(inputs) == 0 {
		inputs = []string{"-"}
	}
	out := json.NewEncoder(os.Stdout)
	for _, in := range inputs {
		var data []byte
		var err error
		if in == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(in)
		}
		var r result
		if err == nil {
			r, err = compute(data)
		}
		if err == nil {
			err = out.Encode(r)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %s: %v\n", in, err)
			os.Exit(1)
		}
	}
}
