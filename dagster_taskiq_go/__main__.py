from dagster_taskiq_go.cli import main

main()
