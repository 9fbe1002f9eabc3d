def algorithm(cities):
    # Visit the cities in the order given: the tour any improvement starts from.
    return list(range(len(cities)))
