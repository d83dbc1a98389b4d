# The demo's app: a small HTTP service that answers with its version and
# can be told to fail or slow down (POST /control), built FROM scratch.
# Replace demo-stable's and demo-candidate's images with your own.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /testapp ./internal/testapp/cmd/testapp

FROM scratch
COPY --from=build /testapp /testapp
EXPOSE 8080
ENTRYPOINT ["/testapp"]
CMD ["serve"]
